"""Time to a held-out loss: the original MiniMind's recipe on a CPU vs ours with every default on.

    .venv/bin/python benchmarks/time_to_loss.py [--stages pretrain,sft] [--budget-steps 300] [--ablations]

Same data (``../shared/data/pretrain``, ``../shared/data/sft``), same model shape (the quickstart's, 1.7M
parameters with this 6,400-token vocabulary: minutes on 2 cores), same CPU, one process. Arms:

- ``base``, the original's recipe as it runs on a CPU: one row per document (``bos + text + eos``) or
  conversation, right-padded / truncated to ``--seq-len``, with the padding attention mask (so eager
  attention), fp32, torch's AdamW (betas 0.9 / 0.999, wd 0.01 on every tensor), the cosine schedule
  ``lr * (0.1 + 0.45 * (1 + cos(pi t / T)))``, no warmup, gradient clip 1.0.
- ``ours``: the native trainer's defaults: documents / conversations packed into full rows (position ids
  restart per document, sdpa), `acceleration.resolve_precision("auto")` (bf16 autocast on CPUs with bf16
  instructions; sdpa itself in fp32, see `modeling_minimind.sdpa_in_fp32_on_cpu`),
  `acceleration.resolve_compile("auto")` with the trainer's `CompiledRegions` (each decoder layer and the
  loss), `optim.build_optimizer` with the stage config's optimizer (pretraining: Muon at 0.02 for the block
  matrices + fused AdamW at `PretrainConfig.learning_rate`, 5e-3, for embeddings and norms; SFT: fused
  AdamW; betas 0.9 / 0.95, no decay on norms and embeddings), the same cosine schedule and clip.
- with ``--ablations``, ``ours`` with one lever changed: ``ours-fp32``, ``ours-eager`` (not compiled),
  ``ours-adamw`` / ``ours-muon`` (the other optimizer; pretraining's default is Muon, SFT's AdamW),
  ``ours-shared-lr`` (Muon's AdamW half at ``--lr`` instead of its own rate); ``--arms`` picks any set,
  ``ours-muon@LR`` is Muon at the RMS-matched (AdamW-comparable) rate LR and ``base@LR`` the original's
  recipe at rate LR (its target stays plain ``base``'s).

Every arm has the same batch (``--batch-size`` rows) and step budget with the schedule's T =
``--budget-steps``. Every weight AdamW trains gets ``--lr`` (the original's pretrain rate 5e-4 by default),
except in our Muon pretraining, whose rates are its own (``muon_lr`` for the matrices, the stage's
``learning_rate`` for the rest). Arms alternate step by
step, so load from other processes hits all alike. Each arm's clock counts its training steps only (the first
one includes compilation); every ``--eval-every`` steps each is scored, in fp32, on the same held-out
documents (token-weighted NLL of ``bos + text + eos`` per document; for SFT the assistant tokens of each
conversation). The target is ``base``'s held-out loss at the end of its budget; an arm's time to it is
interpolated between the two evaluations around the crossing. ``speedup`` = base's time / ours'. MFU = 6 x
non-embedding params x processed tokens/s over the matmul peak of the arm's precision, measured in the same
run. ``--per-step-preset`` (minimind3 by default) adds seconds per step for base and ours at that model's
shape.

The last line printed is JSON: ``{"speedup": <pretrain>, "sft_speedup": ..., ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import matmul_peak, padded_batch  # noqa: E402  (padded_batch: the original's batch)

from minimind_hf.native.acceleration import COMPILE_MIN_STEPS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MINIMIND_SHARED_DATA", REPO.parent / "shared" / "data"))
IGNORE = -100


@dataclass
class Arm:
    name: str
    model: torch.nn.Module
    regions: object  # the trainer's CompiledRegions, or None (eager)
    optimizer: torch.optim.Optimizer
    scheduler: object
    batches: object  # endless iterator of batches
    bf16: bool
    seconds: float = 0.0
    steps: int = 0
    tokens: int = 0  # processed (incl. padding)
    useful: int = 0  # label tokens
    evals: list = field(default_factory=list)  # (seconds, step, loss)
    first_step_seconds: float = 0.0

    def step(self, accum: int = 1) -> float:
        """One optimizer step over `accum` micro-batches (the loss of each divided by `accum`)."""
        t = time.perf_counter()
        for _ in range(accum):
            batch = next(self.batches)
            compiled = self.regions.active() if self.regions is not None else contextlib.nullcontext()
            forward = self.regions.forward_model() if self.regions is not None else self.model
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16), compiled:
                loss = forward(**batch).loss / accum
            loss.backward()
            self.tokens += batch["input_ids"].numel()
            self.useful += int((batch["labels"][:, 1:] != IGNORE).sum())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - t
        if self.steps == 0:
            self.first_step_seconds = elapsed
        self.seconds += elapsed
        self.steps += 1
        return float(loss.detach()) * accum


def endless(batches_of_epoch):
    epoch = 0
    while True:
        yield from batches_of_epoch(epoch)
        epoch += 1


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module, rows: list[tuple[list[int], list[int]]], seq_len: int, pad: int
) -> float:
    """Token-weighted NLL of each held-out row alone (padding masked), fp32, eval mode."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), 32):
        b = padded_batch(rows[i : i + 32], seq_len, pad)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        labels = b["labels"][:, 1:]
        total += F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        ).item()
        count += int((labels != IGNORE).sum())
    model.train()
    return total / max(count, 1)


def time_to(evals: list, target: float) -> float | None:
    """Seconds at which the eval curve first reaches `target` (linear between evaluations), or None."""
    prev = None
    for seconds, _, loss in evals:
        if loss <= target:
            if prev is None or prev[2] == loss:
                return seconds
            frac = (prev[2] - target) / (prev[2] - loss)
            return prev[0] + frac * (seconds - prev[0])
        prev = (seconds, None, loss)
    return None


def build_arm(name: str, config, stage_data: dict, args, total_steps: int, init_state: dict | None) -> Arm:
    from minimind_hf.data.collate import collate_rows
    from minimind_hf.modeling_minimind import MiniMindForCausalLM
    from minimind_hf.native.acceleration import CompiledRegions, resolve_compile, resolve_precision
    from minimind_hf.native.loop import default_param_groups
    from minimind_hf.native.optim import build_optimizer
    from minimind_hf.native.schedule import CosineSchedule

    torch.manual_seed(args.seed)
    model = MiniMindForCausalLM(config)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.train()
    bs = args.batch_size
    if name == "base" or name.startswith("base@"):
        model.set_attn_implementation("eager")
        rows = stage_data["base_rows"]
        lr = float(name.split("@")[1]) if "@" in name else args.lr
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

        def epoch_batches(epoch):
            order = list(range(len(rows)))
            random.Random(args.seed + epoch).shuffle(order)
            for i in range(0, len(order) - bs + 1, bs):
                yield padded_batch([rows[j] for j in order[i : i + bs]], args.seq_len, stage_data["pad"])

        bf16, regions = False, None
    else:
        model.set_attn_implementation("sdpa")
        packed = stage_data["packed"]
        # the stage's own defaults (PretrainConfig / SFTConfig), at the shared learning rate
        from minimind_hf.native.pretrain import PretrainConfig
        from minimind_hf.native.sft import SFTConfig

        settings = PretrainConfig() if stage_data["stage"] == "pretrain" else SFTConfig()
        if settings.optimizer == "adamw" or name in ("ours-adamw", "ours-shared-lr"):
            settings.learning_rate = args.lr  # the rate every weight trains at, as in base
        if name == "ours-adamw":
            settings.optimizer = "adamw"
        elif name.startswith("ours-muon"):
            settings.optimizer = "muon"
            if "@" in name:  # an RMS-matched rate (Moonshot's scaling), comparable with AdamW's
                settings.muon_lr, settings.muon_adjust_lr = float(name.split("@")[1]), "match_rms_adamw"
        optimizer = build_optimizer(settings, default_param_groups(model, settings.weight_decay), model)

        def epoch_batches(epoch):
            order = torch.randperm(
                len(packed), generator=torch.Generator().manual_seed(args.seed + epoch)
            ).tolist()
            for i in range(0, len(order) - bs + 1, bs):
                batch = collate_rows([packed[j] for j in order[i : i + bs]])
                yield {k: batch[k] for k in ("input_ids", "labels", "position_ids")}

        bf16 = name != "ours-fp32" and resolve_precision("auto", "cpu") == "bf16"

        class Stage:  # what resolve_compile asks of an algorithm
            name = stage_data["stage"]
            compile_friendly = True

        compile_it = name != "ours-eager" and resolve_compile(
            "auto", algo=Stage, model=model, total_steps=total_steps, device_type="cpu"
        )
        regions = CompiledRegions(model) if compile_it else None  # what the native loop compiles
    scheduler = CosineSchedule(optimizer, total_steps, 0, 0.1)
    return Arm(name, model, regions, optimizer, scheduler, endless(epoch_batches), bf16)


def run_stage(stage: str, config, stage_data: dict, args, arms: list[str], init_state=None) -> dict:
    T = args.budget_steps
    built = [build_arm(a, config, stage_data, args, T, init_state) for a in arms]
    heldout = stage_data["heldout"]

    def evaluate(arm):
        arm.evals.append(
            (arm.seconds, arm.steps, heldout_loss(arm.model, heldout, args.seq_len, stage_data["pad"]))
        )

    for arm in built:
        evaluate(arm)
    for s in range(1, T + 1):
        for arm in built:
            arm.step()
            if s % args.eval_every == 0 or s == T:
                evaluate(arm)
        if s % max(1, T // 10) == 0:
            print(
                f"  {stage} step {s}/{T}: "
                + ", ".join(f"{a.name} {a.evals[-1][2]:.3f} @ {a.seconds:.0f}s" for a in built),
                flush=True,
            )
    base = next(a for a in built if a.name == "base")
    target = base.evals[-1][2]
    # an arm that has not reached the target within the budget runs on (lr at its floor) up to 2x the budget
    for arm in built:
        while arm.name != "base" and time_to(arm.evals, target) is None and arm.steps < 2 * T:
            arm.step()
            if arm.steps % args.eval_every == 0:
                evaluate(arm)

    out = {"target_loss": round(target, 4), "arms": {}}
    for arm in built:
        reached = time_to(arm.evals, target)
        precision = torch.bfloat16 if arm.bf16 else torch.float32
        n_nonembed = (
            sum(p.numel() for p in arm.model.parameters()) - arm.model.model.embed_tokens.weight.numel()
        )
        tok_s = arm.tokens / arm.seconds
        out["arms"][arm.name] = {
            "seconds_to_target": round(reached, 1) if reached is not None else None,
            "steps": arm.steps,
            "train_seconds": round(arm.seconds, 1),
            "first_step_seconds": round(arm.first_step_seconds, 2),
            "final_loss": round(arm.evals[-1][2], 4),
            "loss_at_budget": round(next(e[2] for e in arm.evals if e[1] == T), 4),
            "tokens_per_sec": round(tok_s, 1),
            "useful_tokens_per_sec": round(arm.useful / arm.seconds, 1),
            "mfu": round(6 * n_nonembed * tok_s / args.peaks[precision], 4),
            "precision": "bf16" if arm.bf16 else "fp32",
            "compiled": arm.regions is not None,
            "curve": [(round(t, 1), st, round(lo, 4)) for t, st, lo in arm.evals],
        }
    t_base = out["arms"]["base"]["seconds_to_target"]
    for arm in out["arms"].values():
        arm["speedup"] = round(t_base / arm["seconds_to_target"], 2) if arm["seconds_to_target"] else None
    out["model"] = built[0].model
    return out


def per_step(preset: str, stage_data: dict, args, vocab: int) -> dict:
    """Seconds per optimizer step for base and ours at `preset`'s shape, ``--per-step-batch`` rows x
    ``--per-step-accum`` micro-batches (3 timed steps after one warm-up each). Muon's orthogonalisation costs
    the same whatever the batch, so a step of a few rows would overstate it."""
    from minimind_hf.configuration_minimind import MiniMindConfig

    config = MiniMindConfig.from_preset(preset, vocab_size=vocab)
    small = argparse.Namespace(**{**vars(args), "batch_size": args.per_step_batch})
    out = {}
    for name in ("base", "ours"):
        arm = build_arm(name, config, stage_data, small, COMPILE_MIN_STEPS, None)
        arm.step(args.per_step_accum)  # warm-up (and compilation)
        t0 = arm.seconds
        for _ in range(3):
            arm.step(args.per_step_accum)
        sec = (arm.seconds - t0) / 3
        n_nonembed = (
            sum(p.numel() for p in arm.model.parameters()) - arm.model.model.embed_tokens.weight.numel()
        )
        tok_s = small.batch_size * args.per_step_accum * args.seq_len / sec
        peak = args.peaks[torch.bfloat16 if arm.bf16 else torch.float32]
        out[name] = {
            "seconds_per_step": round(sec, 3),
            "tokens_per_sec": round(tok_s, 1),
            "mfu": round(6 * n_nonembed * tok_s / peak, 4),
            "first_step_seconds": round(arm.first_step_seconds, 1),
            "precision": "bf16" if arm.bf16 else "fp32",
            "compiled": arm.regions is not None,
        }
        del arm
    out["speedup_per_step"] = round(out["base"]["seconds_per_step"] / out["ours"]["seconds_per_step"], 2)
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="pretrain,sft")
    ap.add_argument("--budget-steps", type=int, default=300, help="base's step budget (the schedule's T)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=340, help="the original's pretrain length")
    ap.add_argument(
        "--lr", type=float, default=5e-4, help="every arm's learning rate (the original's pretrain rate)"
    )
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--heldout", type=int, default=128, help="held-out documents / conversations")
    ap.add_argument("--documents", type=int, default=0, help="pretrain documents read (0 = all)")
    ap.add_argument(
        "--ablations", action="store_true", help="also ours-fp32, ours-eager, ours-adamw, ours-muon"
    )
    ap.add_argument("--arms", default="", help="comma-separated arms instead (base is always run)")
    ap.add_argument("--per-step-preset", default="minimind3", help="'' to skip the per-step figure")
    ap.add_argument("--per-step-batch", type=int, default=2)
    ap.add_argument("--per-step-accum", type=int, default=8, help="micro-batches per optimizer step")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument(
        "--curves", help="write every arm's (seconds, step, held-out loss) curve to this JSON file"
    )
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def _arm_names(args: argparse.Namespace) -> list[str]:
    """The arms to run, base first; exits on an unknown one."""
    arms = ["base", "ours"] + (
        ["ours-fp32", "ours-eager", "ours-adamw", "ours-muon", "ours-shared-lr"] if args.ablations else []
    )
    if args.arms:
        arms = ["base"] + [a for a in args.arms.split(",") if a and a != "base"]
    known = ("ours", "ours-fp32", "ours-eager", "ours-adamw", "ours-muon", "ours-shared-lr")
    with_rate = ("ours-muon@", "base@")
    bad = [
        a
        for a in arms[1:]
        if (a.split("@")[0] not in known and not a.startswith("base@"))
        or (a.startswith(with_rate) and not _is_float(a.split("@")[1]))
    ]
    if bad:
        raise SystemExit(f"--arms: unknown {bad}; valid: {', '.join(known)}, ours-muon@LR, base@LR")
    return arms


def _setup(args: argparse.Namespace):
    """The pretrain documents, a tokenizer trained on them and the quickstart-shaped model config
    (printed)."""
    from minimind_hf.configuration_minimind import MiniMindConfig
    from minimind_hf.data import load_records
    from minimind_hf.modeling_minimind import MiniMindForCausalLM
    from minimind_hf.quickstart import QUICKSTART_MODEL
    from minimind_hf.tokenizer import train_tokenizer

    pre = load_records("pretrain", SHARED / "pretrain" / "pretrain_mix.jsonl").shuffle(seed=args.seed)
    if args.documents:
        pre = pre.select(range(min(args.documents, len(pre))))
    tok = train_tokenizer(pre["text"], vocab_size=6400, show_progress=False)
    config = MiniMindConfig.from_preset("tiny", vocab_size=len(tok), **QUICKSTART_MODEL)
    n_params = sum(p.numel() for p in MiniMindForCausalLM(config).parameters())
    print(
        f"model: quickstart shape, {n_params / 1e6:.2f}M "
        f"params; {torch.get_num_threads()} threads; matmul peak fp32 {args.peaks[torch.float32] / 1e9:.0f}, "
        f"bf16 {args.peaks[torch.bfloat16] / 1e9:.0f} GFLOP/s",
        flush=True,
    )
    return pre, tok, config


def _pretrain_data(pre, tok, args: argparse.Namespace) -> dict:
    """Pretraining's rows: one per document for base, packed for ours; the first `--heldout` held out."""
    from minimind_hf.data.packing import pack_token_ids
    from minimind_hf.data.pretrain_pipeline import tokenize_texts

    pad, eos, bos = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    ids = tokenize_texts(pre, tok)["ids"]
    held, train_ids = ids[: args.heldout], ids[args.heldout :]
    docs = [[bos] + d + [eos] for d in train_ids]
    return {
        "stage": "pretrain",
        "pad": pad,
        "base_rows": [(d, d) for d in docs],
        "packed": pack_token_ids(train_ids, args.seq_len, eos),
        "heldout": [([bos] + d + [eos], [bos] + d + [eos]) for d in held],
    }


def _sft_data(tok, args: argparse.Namespace) -> dict:
    """SFT's rows: one per conversation for base, packed for ours; the first `--heldout` held out."""
    from minimind_hf.data import load_records
    from minimind_hf.data.packing import pack_sequences
    from minimind_hf.data.rendering import encode_conversation
    from minimind_hf.data.sft_pipeline import tokenize_conversations

    pad = tok.pad_token_id
    sft = load_records("sft", SHARED / "sft" / "sft_mix.jsonl").shuffle(seed=args.seed)
    held_c, train_c = sft.select(range(args.heldout)), sft.select(range(args.heldout, len(sft)))
    full = [
        encode_conversation(tok, c, t)
        for c, t in zip(train_c["conversations"], train_c["tools"], strict=False)
    ]
    held_rows = [
        encode_conversation(tok, c, t) for c, t in zip(held_c["conversations"], held_c["tools"], strict=False)
    ]
    enc = tokenize_conversations(train_c, tok, max_length=args.seq_len)
    return {
        "stage": "sft",
        "pad": pad,
        "base_rows": [(f["input_ids"], f["labels"]) for f in full],
        "packed": pack_sequences(enc, args.seq_len, pad),
        "heldout": [(f["input_ids"], f["labels"]) for f in held_rows],
    }


def _print_stage(stage: str, res: dict) -> None:
    for name, arm in res["arms"].items():
        print(
            f"{stage} {name:10s}: target {res['target_loss']:.3f} reached in "
            f"{arm['seconds_to_target'] if arm['seconds_to_target'] is not None else 'never'} s "
            f"(speedup {arm['speedup']}); loss at budget {arm['loss_at_budget']:.3f}; "
            f"{arm['tokens_per_sec']:.0f} tok/s, MFU {arm['mfu']:.1%} ({arm['precision']}"
            f"{', compiled' if arm['compiled'] else ''}; first step {arm['first_step_seconds']:.1f} s)",
            flush=True,
        )


def _run_stages(stages: list[str], arms: list[str], config, pretrain_data: dict, tok, args) -> dict:
    """Every stage's `run_stage` result, in order (SFT's data is built only when it runs)."""
    out = {}
    pretrained = None
    for stage in stages:
        if stage == "pretrain":
            data = pretrain_data
        elif stage == "sft":
            data = _sft_data(tok, args)
        else:
            raise SystemExit(f"--stages: unknown stage {stage!r} (pretrain, sft)")
        print(
            f"{stage}: {len(data['base_rows'])} training rows for base, {len(data['packed'])} packed rows "
            "for ours; "
            f"held-out {len(data['heldout'])}",
            flush=True,
        )
        # SFT starts from the model base pretrained (the same weights for every arm), when pretrain ran first
        res = run_stage(stage, config, data, args, arms, init_state=pretrained if stage == "sft" else None)
        model = res.pop("model")
        if stage == "pretrain":
            pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        out[stage] = res
        _print_stage(stage, res)
    return out


def _per_step_figure(args: argparse.Namespace, pretrain_data: dict, vocab: int) -> dict:
    ps = {"preset": args.per_step_preset, **per_step(args.per_step_preset, pretrain_data, args, vocab)}
    print(
        f"{args.per_step_preset} per step ({args.per_step_accum} x {args.per_step_batch} x {args.seq_len}): "
        f"base {ps['base']['seconds_per_step']} s, "
        f"ours {ps['ours']['seconds_per_step']} s -> {ps['speedup_per_step']}x; "
        f"MFU {ps['base']['mfu']:.1%} vs "
        f"{ps['ours']['mfu']:.1%}",
        flush=True,
    )
    return ps


def main(argv: list[str] | None = None) -> dict:
    args = _parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    t0 = time.time()
    args.peaks = {dtype: matmul_peak(1024, dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
    stages = [s for s in args.stages.split(",") if s]
    arms = _arm_names(args)
    pre, tok, config = _setup(args)
    pretrain_data = _pretrain_data(pre, tok, args)
    result: dict = {
        "threads": torch.get_num_threads(),
        "batch_rows": args.batch_size,
        "seq_len": args.seq_len,
        "lr": args.lr,
        "budget_steps": args.budget_steps,
        "matmul_peak_gflops": {
            "fp32": round(args.peaks[torch.float32] / 1e9, 1),
            "bf16": round(args.peaks[torch.bfloat16] / 1e9, 1),
        },
    }
    result.update(_run_stages(stages, arms, config, pretrain_data, tok, args))
    if args.per_step_preset:
        result["per_step"] = _per_step_figure(args, pretrain_data, len(tok))
    # the curves go to --curves, not into the JSON line
    curves = {
        stage: {name: arm.pop("curve") for name, arm in result[stage]["arms"].items()} for stage in stages
    }
    if args.curves:
        Path(args.curves).write_text(json.dumps(curves), encoding="utf-8")
    if "pretrain" in result:
        result["speedup"] = result["pretrain"]["arms"]["ours"]["speedup"]
    if "sft" in result:
        result["sft_speedup"] = result["sft"]["arms"]["ours"]["speedup"]
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
