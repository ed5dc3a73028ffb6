"""Training throughput on the CPU: our packed pipeline vs what the original MiniMind did.

    .venv/bin/python benchmarks/train_throughput.py [--steps 3] [--batch-size 2] [--preset minimind3]

One run, one model (``minimind3`` preset, fp32, CPU), two workloads, each measured both ways:

- SFT (``../shared/data/sft``, max length 512). Ours: conversations rendered with the chat template, labels on
  assistant tokens, whole conversations packed into rows of 512 (position ids restart per conversation, sdpa,
  no attention mask). Baseline (the original): every conversation padded to 512 (longer ones truncated),
  with the padding attention mask, which sends attention down the eager path. Metric: useful
  (label-bearing) tokens per second.
- Pretrain (``../shared/data/pretrain``, seq 768). Ours: documents + eos packed into rows of 768, nothing
  dropped. Baseline: bos + text + eos per document, padded/truncated to 768, padding mask, eager.
  Metrics: useful tokens/s and the share of the corpus's tokens that training actually sees.

Each measurement is forward + backward + AdamW step on ``--batch-size`` rows, ``--steps`` timed steps after
one warm-up step, ours and the baseline alternating step by step (fair on a shared machine). With few timed
rows, *which* rows were drawn moves the useful-token count a lot (a padded 512-token row costs the same
whether it holds 20 or 300 label tokens), so the benchmark also reports each side's time per step times the
*dataset's* average useful tokens per row (``*_expected``): the less noisy figure. Model FLOP utilisation =
6 x non-embedding params x useful tokens/s / the fp32 matmul peak measured in the same run. Peak RSS from
``getrusage``. The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MINIMIND_SHARED_DATA", REPO.parent / "shared" / "data"))
IGNORE = -100


def matmul_peak(n: int = 1536, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best observed matmul FLOP/s in `dtype` on this machine, now (same threads as training)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def compare(model, optimizer, ours: list[dict], base: list[dict], steps: int) -> tuple[float, float]:
    """Useful (label) tokens/s of our batches (sdpa, no mask) and the baseline's (eager, padding mask).

    One warm-up step each, then the timed steps alternate ours/baseline, so that load from other
    processes on a shared machine hits both alike."""

    def one(batch, attn) -> tuple[float, int]:
        model.set_attn_implementation(attn)
        t = time.perf_counter()
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t, int((batch["labels"][:, 1:] != IGNORE).sum())

    one(ours[0], "sdpa")
    one(base[0], "eager")
    totals = {"ours": [0.0, 0], "base": [0.0, 0]}
    for i in range(1, steps + 1):
        for name, batches, attn in (("ours", ours, "sdpa"), ("base", base, "eager")):
            seconds, useful = one(batches[i], attn)
            totals[name][0] += seconds
            totals[name][1] += useful
    return {name: {"seconds_per_step": t / steps, "useful_tok_s": u / t} for name, (t, u) in totals.items()}


def label_count(labels) -> int:
    """Label tokens the loss sees in one row (after the shift), as `compare` counts them."""
    labels = list(labels)
    return sum(1 for t in labels[1:] if t != IGNORE)


def expected_rate(timing: dict, useful_per_row: float, rows_per_step: int) -> float:
    """Useful tokens/s with the *dataset's average* useful tokens per row: a padded row costs the same
    whatever it holds, so this removes the noise of which few rows the timed steps happened to draw."""
    return useful_per_row * rows_per_step / timing["seconds_per_step"]


def padded_batch(rows: list[tuple[list[int], list[int]]], length: int, pad: int) -> dict:
    """The original's batch: right-pad/truncate to `length`, attention mask on the padding."""
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        x, y = x[:length], y[:length]
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def packed_batch(packed, indices) -> dict:
    from minimind_hf.data.collate import collate_rows

    return collate_rows([packed[i] for i in indices])


def param_counts(model) -> tuple[int, int]:
    """All parameters and the non-embedding ones (what the MFU's 6 x N counts)."""
    n_params = sum(p.numel() for p in model.parameters())
    return n_params, n_params - model.model.embed_tokens.weight.numel()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="minimind3")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after 1 warm-up)")
    ap.add_argument("--batch-size", type=int, default=1, help="rows per step")
    ap.add_argument("--sft-rows", type=int, default=1500, help="conversations read from the SFT data")
    ap.add_argument("--pretrain-rows", type=int, default=3000, help="documents read from the pretrain data")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def _load_data(args: argparse.Namespace):
    """The pretrain documents and SFT conversations (shuffled, first rows) and a tokenizer trained on them."""
    from minimind_hf.data import load_records
    from minimind_hf.tokenizer import train_tokenizer

    pre = load_records("pretrain", SHARED / "pretrain" / "pretrain_mix.jsonl")
    pre = pre.shuffle(seed=args.seed).select(range(min(args.pretrain_rows, len(pre))))
    sft = load_records("sft", SHARED / "sft" / "sft_mix.jsonl")
    sft = sft.shuffle(seed=args.seed).select(range(min(args.sft_rows, len(sft))))
    tok = train_tokenizer(pre["text"], vocab_size=6400, show_progress=False)
    return pre, sft, tok


def _draw_batches(rng: random.Random, population: int, bs: int, n_batches: int, make) -> list[dict]:
    """`n_batches` batches of `bs` distinct rows drawn from `population`; `make(row indices)` builds one."""
    picks = rng.sample(range(population), n_batches * bs)
    return [make(picks[i * bs : (i + 1) * bs]) for i in range(n_batches)]


def _measure(model, optimizer, ours: list[dict], base: list[dict], useful_per_row, args) -> dict:
    """`compare`'s rates, and both at the dataset's average useful tokens per row (`useful_per_row`: ours',
    the baseline's)."""
    timing = compare(model, optimizer, ours, base, args.steps)
    per_row_ours, per_row_base = useful_per_row
    return {
        "ours": timing["ours"]["useful_tok_s"],
        "base": timing["base"]["useful_tok_s"],
        "ours_exp": expected_rate(timing["ours"], per_row_ours, args.batch_size),
        "base_exp": expected_rate(timing["base"], per_row_base, args.batch_size),
    }


def _bench_sft(model, optimizer, sft, tok, rng: random.Random, args) -> dict:
    """SFT at 512: packed conversations vs one padded conversation per row."""
    from minimind_hf.data.packing import pack_sequences
    from minimind_hf.data.rendering import encode_conversation
    from minimind_hf.data.sft_pipeline import tokenize_conversations

    L, pad, bs, n_batches = 512, tok.pad_token_id, args.batch_size, args.steps + 1
    enc = tokenize_conversations(sft, tok, max_length=L)
    packed = pack_sequences(enc, L, pad)
    ours = _draw_batches(rng, len(packed), bs, n_batches, lambda rows: packed_batch(packed, rows))
    full = [encode_conversation(tok, c, t) for c, t in zip(sft["conversations"], sft["tools"], strict=False)]
    base = _draw_batches(
        rng,
        len(full),
        bs,
        n_batches,
        lambda rows: padded_batch([(full[j]["input_ids"], full[j]["labels"]) for j in rows], L, pad),
    )
    out = _measure(
        model,
        optimizer,
        ours,
        base,
        (
            float(np.mean([label_count(packed[i]["labels"]) for i in range(len(packed))])),
            float(np.mean([label_count(f["labels"][:L]) for f in full])),
        ),
        args,
    )
    out["fill_ours"] = float(np.mean(packed.input_ids != pad)) if pad is not None else None
    out["fill_base"] = float(np.mean([min(len(f["input_ids"]), L) / L for f in full]))
    return out


def _bench_pretrain(model, optimizer, pre, tok, rng: random.Random, args) -> dict:
    """Pretraining at 768: packed documents vs one padded/truncated document per row."""
    from minimind_hf.data.packing import pack_token_ids
    from minimind_hf.data.pretrain_pipeline import tokenize_texts

    S, bs, n_batches = 768, args.batch_size, args.steps + 1
    pad, eos, bos = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    ids = tokenize_texts(pre, tok)["ids"]
    corpus_tokens = sum(len(d) + 2 for d in ids)  # bos + text + eos, the original's document
    packed_pre = pack_token_ids(ids, S, eos)
    ours = _draw_batches(rng, len(packed_pre), bs, n_batches, lambda rows: packed_batch(packed_pre, rows))
    docs = [[bos] + d + [eos] for d in ids]
    base = _draw_batches(
        rng, len(docs), bs, n_batches, lambda rows: padded_batch([(docs[j], docs[j]) for j in rows], S, pad)
    )
    out = _measure(
        model,
        optimizer,
        ours,
        base,
        (
            float(np.mean([label_count(packed_pre[i]["labels"]) for i in range(len(packed_pre))])),
            float(np.mean([min(len(d), S) - 1 for d in docs])),
        ),
        args,
    )
    # every token is in some row
    out["share_ours"] = (sum(len(d) + 1 for d in ids)) / sum(len(d) + 1 for d in ids)
    out["share_base"] = sum(min(len(d), S) for d in docs) / corpus_tokens
    return out


def _summary(
    args, n_params: int, non_embed: int, peak: float, sft: dict, pre: dict, rss_mb: float, t0: float
) -> dict:
    return {
        "preset": args.preset,
        "params_m": round(n_params / 1e6, 2),
        "non_embedding_params_m": round(non_embed / 1e6, 2),
        "threads": torch.get_num_threads(),
        "batch_rows": args.batch_size,
        "timed_steps": args.steps,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "sft_useful_tok_s_ours": round(sft["ours"], 1),
        "sft_useful_tok_s_baseline": round(sft["base"], 1),
        "sft_speedup": round(sft["ours"] / sft["base"], 2),
        "sft_useful_tok_s_ours_expected": round(sft["ours_exp"], 1),
        "sft_useful_tok_s_baseline_expected": round(sft["base_exp"], 1),
        "sft_speedup_expected": round(sft["ours_exp"] / sft["base_exp"], 2),
        "pretrain_speedup_expected": round(pre["ours_exp"] / pre["base_exp"], 2),
        "sft_row_fill_ours": round(sft["fill_ours"], 3),
        "sft_row_fill_baseline": round(sft["fill_base"], 3),
        "pretrain_useful_tok_s_ours": round(pre["ours"], 1),
        "pretrain_useful_tok_s_baseline": round(pre["base"], 1),
        "pretrain_speedup": round(pre["ours"] / pre["base"], 2),
        "pretrain_corpus_share_trained_ours": round(pre["share_ours"], 4),
        "pretrain_corpus_share_trained_baseline": round(pre["share_base"], 4),
        "mfu_sft_ours": round(6 * non_embed * sft["ours"] / peak, 4),
        "mfu_sft_baseline": round(6 * non_embed * sft["base"] / peak, 4),
        "mfu_pretrain_ours": round(6 * non_embed * pre["ours"] / peak, 4),
        "mfu_pretrain_baseline": round(6 * non_embed * pre["base"] / peak, 4),
        "peak_rss_mb": round(rss_mb, 1),
        "seconds": round(time.time() - t0, 1),
    }


def _print_report(
    args, n_params: int, non_embed: int, peak: float, sft: dict, pre: dict, rss_mb: float, result: dict
) -> None:
    print(
        f"{args.preset}: {n_params / 1e6:.1f}M params ({non_embed / 1e6:.1f}M non-embedding), fp32 CPU, "
        f"{torch.get_num_threads()} threads, matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(
        f"SFT @512   useful tok/s: ours {sft['ours']:.0f} vs baseline {sft['base']:.0f} -> "
        f"{sft['ours'] / sft['base']:.2f}x (row fill {sft['fill_ours']:.0%} vs {sft['fill_base']:.0%}); "
        f"at the dataset's average useful tokens per row: {sft['ours_exp']:.0f} vs {sft['base_exp']:.0f} -> "
        f"{sft['ours_exp'] / sft['base_exp']:.2f}x"
    )
    print(
        f"pretrain @768 useful tok/s: ours {pre['ours']:.0f} vs baseline {pre['base']:.0f} -> "
        f"{pre['ours'] / pre['base']:.2f}x (dataset average: {pre['ours_exp'] / pre['base_exp']:.2f}x); "
        f"corpus share trained {pre['share_ours']:.1%} vs {pre['share_base']:.1%}"
    )
    print(
        f"MFU: SFT {result['mfu_sft_ours']:.1%} vs {result['mfu_sft_baseline']:.1%}; pretrain "
        f"{result['mfu_pretrain_ours']:.1%} vs {result['mfu_pretrain_baseline']:.1%}; "
        f"peak RSS {rss_mb:.0f} MB"
    )


def main(argv: list[str] | None = None) -> dict:
    args = _parse_args(argv)

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    from minimind_hf.configuration_minimind import MiniMindConfig
    from minimind_hf.modeling_minimind import MiniMindForCausalLM

    t0 = time.time()
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    pre, sft, tok = _load_data(args)
    config = MiniMindConfig.from_preset(args.preset, vocab_size=len(tok), attn_implementation="sdpa")
    model = MiniMindForCausalLM(config).train()
    n_params, non_embed = param_counts(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    peak = matmul_peak()
    sft_r = _bench_sft(model, optimizer, sft, tok, rng, args)
    peak = max(peak, matmul_peak())
    pre_r = _bench_pretrain(model, optimizer, pre, tok, rng, args)
    peak = max(peak, matmul_peak())

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = _summary(args, n_params, non_embed, peak, sft_r, pre_r, rss_mb, t0)
    _print_report(args, n_params, non_embed, peak, sft_r, pre_r, rss_mb, result)
    print(json.dumps(result))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
