"""Evaluation: lm-eval tasks for C-Eval and CMMLU, perplexity and bits-per-byte (installed as minimind_hf.eval)."""
