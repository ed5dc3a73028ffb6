"""YAML-configured training recipes (pretrain, SFT, LoRA, DPO, PPO, GRPO, RLOO, distillation) run with
``accelerate launch``, through trl/peft (``backend: trl``) or our native trainers (``backend: native``).

This folder installs as ``minimind_hf.recipes``; see ``recipes/README.md``.
"""
