"""SFT throughput on the CPU: the recipe's two backends, trl's ``SFTTrainer`` vs our native trainer.

    .venv/bin/python benchmarks/sft_backends.py [--preset minimind3] [--steps 4] [--batch-size 2]
                                                [--data FILE]

Both train the same thing (``tests/recipes/test_parity_sft.py`` checks labels, loss, gradients and optimizer
steps agree) from the same records, model (``--preset``, same seed), tokenizer, ``--max-length`` and rows
per step, fp32 on the CPU, the way ``recipes/sft.py`` runs them:

- trl: ``SFTTrainer(packing=True, packing_strategy="bfd", assistant_only_loss=True)``: conversations
  best-fit packed, padding-free collation (each batch one flattened row with per-conversation positions),
  trl's fused chunked LM head for the loss; ``--batch-size`` packed rows per step.
- native: ``minimind_hf.native.loop.train`` with the `SFT` algorithm: best-fit packed rows of
  ``max_length`` (pad tails, positions restarting per conversation, no attention mask); ``--batch-size``
  rows per step.

Metric: useful (label-bearing) tokens per second over ``--steps`` optimizer steps (forward, backward,
clipping, AdamW and each loop's own bookkeeping, data collation included), after ``--warmup`` steps that are
excluded.
trl: step times from a callback (``on_step_end`` to ``on_step_end``), label tokens counted in
``compute_loss``.
native: the loop's own ``train_log.jsonl`` (per-step tokens/s and label count, ``items``). The two run one
after the other (trl first), so load from other processes on a shared machine can favour either: repeat with
``--order native-first`` to check. Data loading, tokenising and packing are outside the timing. The last
line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MINIMIND_SHARED_DATA", REPO.parent / "shared" / "data"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (  # noqa: E402  (the benchmarks share helpers by import)
    IGNORE,
    matmul_peak,
    param_counts,
)


def default_data() -> str:
    path = SHARED / "sft" / "sft_mix.jsonl"
    return str(path) if path.is_file() else "demo:sft:3000"


def new_model(preset: str, vocab_size: int, seed: int):
    from minimind_hf.configuration_minimind import MiniMindConfig
    from minimind_hf.modeling_minimind import MiniMindForCausalLM

    torch.manual_seed(seed)
    return MiniMindForCausalLM(
        MiniMindConfig.from_preset(preset, vocab_size=vocab_size, attn_implementation="sdpa")
    )


def run_trl(records, tok, args, out: Path) -> dict:
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    counts: dict[int, int] = {}
    marks: list[float] = []

    class Counting(SFTTrainer):
        def compute_loss(self, model, inputs, *a, **kw):
            if model.training:
                step = self.state.global_step + 1
                counts[step] = counts.get(step, 0) + int((inputs["labels"][..., 1:] != IGNORE).sum())
            return super().compute_loss(model, inputs, *a, **kw)

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            marks.append(time.perf_counter())

        def on_step_end(self, *a, **kw):
            marks.append(time.perf_counter())

    total = args.warmup + args.steps
    cfg = SFTConfig(
        output_dir=str(out),
        max_length=args.max_length,
        packing=True,
        packing_strategy="bfd",
        assistant_only_loss=True,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=1e-5,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        weight_decay=0.01,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        max_steps=total,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    model = new_model(args.preset, len(tok), args.seed)
    trainer = Counting(
        model=model,
        args=cfg,
        train_dataset=records.rename_column("conversations", "messages"),
        processing_class=tok,
        callbacks=[Clock()],
    )
    fill = sum(sum(r["seq_lengths"]) for r in trainer.train_dataset) / (
        len(trainer.train_dataset) * args.max_length
    )
    trainer.train()
    seconds = marks[total] - marks[args.warmup]
    useful = sum(counts[s] for s in range(args.warmup + 1, total + 1))
    return {
        "useful_tok_s": useful / seconds,
        "seconds": seconds,
        "useful_tokens": useful,
        "row_fill": fill,
        "rows": len(trainer.train_dataset),
    }


def run_native(records, tok, args, out: Path) -> dict:
    import numpy as np

    from minimind_hf.data.collate import collate_rows
    from minimind_hf.data.packing import pack_sequences
    from minimind_hf.data.sft_pipeline import tokenize_conversations
    from minimind_hf.native.loop import train
    from minimind_hf.native.sft import SFT, SFTConfig

    total = args.warmup + args.steps
    cfg = SFTConfig(
        data=[],
        output_dir=str(out),
        max_length=args.max_length,
        packing=True,
        batch_size=args.batch_size,
        grad_accum_steps=1,
        learning_rate=1e-5,
        min_lr_ratio=0.1,
        weight_decay=0.01,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        max_steps=total,
        seed=args.seed,
        mixed_precision="no",
        report_to=["none"],
        progress=False,
        resume="never",
        log_every=1,
    )
    rows = pack_sequences(
        tokenize_conversations(records, tok, args.max_length), args.max_length, tok.pad_token_id
    )
    model = new_model(args.preset, len(tok), args.seed)
    algo = SFT(cfg, model, tok, rows, collate_fn=partial(collate_rows, pad_token_id=tok.pad_token_id))
    train(cfg, algo)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    log = [r for r in log if "loss" in r]
    seen = [0] + [r["tokens_seen"] for r in log]
    timed = range(args.warmup, total)
    seconds = sum((seen[i + 1] - seen[i]) / log[i]["tokens_per_sec"] for i in timed)
    useful = sum(log[i]["items"] for i in timed)
    fill = float(np.mean(rows.input_ids != tok.pad_token_id))
    return {
        "useful_tok_s": useful / seconds,
        "seconds": seconds,
        "useful_tokens": useful,
        "row_fill": fill,
        "rows": len(rows),
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        default=default_data(),
        help="SFT file/folder or demo:sft:N (default: the shared "
        "sft_mix.jsonl if present, else demo:sft:3000)",
    )
    ap.add_argument("--preset", default="minimind3", help="MiniMindConfig preset (tiny for a quick run)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument(
        "--batch-size", type=int, default=2, help="packed rows per optimizer step (both backends)"
    )
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    ap.add_argument("--records", type=int, default=1500, help="conversations read from --data")
    ap.add_argument("--vocab-size", type=int, default=6400, help="tokenizer trained on the records' text")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--order", choices=["trl-first", "native-first"], default="trl-first")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def _records_and_tokenizer(args: argparse.Namespace):
    """`--records` shuffled conversations from `--data` and a tokenizer trained on their text."""
    from minimind_hf.data import load_records
    from minimind_hf.tokenizer import train_tokenizer

    records = load_records("sft", args.data).shuffle(seed=args.seed)
    records = records.select(range(min(args.records, len(records))))
    texts = [m["content"] for conv in records["conversations"] for m in conv if m["content"]]
    return records, train_tokenizer(texts, vocab_size=args.vocab_size, show_progress=False)


def _run_backends(records, tok, args: argparse.Namespace) -> dict[str, dict]:
    from accelerate.state import AcceleratorState

    results = {}
    with tempfile.TemporaryDirectory(prefix="sft_backends_") as tmp:
        order = ["trl", "native"] if args.order == "trl-first" else ["native", "trl"]
        for name in order:
            AcceleratorState._reset_state(reset_partial_state=True)
            run = run_trl if name == "trl" else run_native
            results[name] = run(records, tok, args, Path(tmp) / name)
        AcceleratorState._reset_state(reset_partial_state=True)
    return results


def _summary(args, records, results: dict, n_params: int, non_embed: int, peak: float, t0: float) -> dict:
    trl, nat = results["trl"], results["native"]
    return {
        "preset": args.preset,
        "params_m": round(n_params / 1e6, 2),
        "non_embedding_params_m": round(non_embed / 1e6, 2),
        "data": str(args.data),
        "records": len(records),
        "max_length": args.max_length,
        "batch_rows": args.batch_size,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "threads": torch.get_num_threads(),
        "order": args.order,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "trl_useful_tok_s": round(trl["useful_tok_s"], 1),
        "native_useful_tok_s": round(nat["useful_tok_s"], 1),
        "native_over_trl": round(nat["useful_tok_s"] / trl["useful_tok_s"], 3),
        "trl_row_fill": round(trl["row_fill"], 3),
        "native_row_fill": round(nat["row_fill"], 3),
        "trl_rows": trl["rows"],
        "native_rows": nat["rows"],
        "trl_timed_seconds": round(trl["seconds"], 2),
        "native_timed_seconds": round(nat["seconds"], 2),
        "trl_useful_tokens": trl["useful_tokens"],
        "native_useful_tokens": nat["useful_tokens"],
        "mfu_trl": round(6 * non_embed * trl["useful_tok_s"] / peak, 4),
        "mfu_native": round(6 * non_embed * nat["useful_tok_s"] / peak, 4),
        "seconds": round(time.time() - t0, 1),
    }


def _print_report(args, records, results: dict, n_params: int, result: dict) -> None:
    trl, nat = results["trl"], results["native"]
    print(
        f"{args.preset}: {n_params / 1e6:.1f}M params, fp32 CPU, {torch.get_num_threads()} threads, "
        f"{len(records)} conversations, max_length {args.max_length}, {args.batch_size} packed rows/step, "
        f"{args.steps} timed steps after {args.warmup} warm-up"
    )
    print(
        f"trl    (SFTTrainer, bfd + padding-free): {trl['useful_tok_s']:8.1f} useful tok/s "
        f"({trl['useful_tokens']} label tokens in {trl['seconds']:.1f}s; {trl['rows']} rows, "
        f"fill {trl['row_fill']:.0%})"
    )
    print(
        f"native (packed rows, no mask)          : {nat['useful_tok_s']:8.1f} useful tok/s "
        f"({nat['useful_tokens']} label tokens in {nat['seconds']:.1f}s; {nat['rows']} rows, "
        f"fill {nat['row_fill']:.0%})"
    )
    ratio = nat["useful_tok_s"] / trl["useful_tok_s"]
    print(f"native / trl = {ratio:.2f}x  (MFU {result['mfu_native']:.1%} vs {result['mfu_trl']:.1%})")


def main(argv: list[str] | None = None) -> dict:
    args = _parse_args(argv)

    import logging

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    logging.getLogger("minimind_hf").setLevel(logging.WARNING)

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    records, tok = _records_and_tokenizer(args)
    n_params, non_embed = param_counts(new_model(args.preset, len(tok), args.seed))
    peak = matmul_peak()
    results = _run_backends(records, tok, args)
    peak = max(peak, matmul_peak())

    result = _summary(args, records, results, n_params, non_embed, peak, t0)
    _print_report(args, records, results, n_params, result)
    print(json.dumps(result))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
