"""The one training loop every native algorithm runs on (pretrain, SFT, LoRA, DPO, PPO, GRPO, distillation).

An algorithm is a subclass of `Algorithm` that says how to turn a batch into a loss; `train(cfg, algo)` does
everything else: accelerate (whatever accelerator torch finds, or the CPU; DDP), the speed levers of
`acceleration` (bf16 autocast where the hardware computes bf16, ``torch.compile``, the CPU thread count),
fused AdamW (no weight decay on norms, biases, embeddings) or Muon + AdamW (`optim`), linear warmup + cosine
to ``min_lr_ratio * lr`` stepped per optimizer step, gradient clipping, gradient accumulation normalised by
token count, tqdm progress
(loss, lr, tokens/s), trackers (tensorboard by default; wandb/swanlab if installed), evaluation on a
held-out split, atomic checkpoints that resume exactly, and the final Hugging Face folder in ``output_dir``.

How an algorithm plugs in
-------------------------
Subclass `Algorithm` and override what differs (defaults implement plain causal-LM training on batches
holding ``input_ids``/``labels`` and optionally ``position_ids``/``attention_mask``)::

    class DPO(Algorithm):
        def setup(self, accelerator):             # once, after accelerate is ready: move ref/teacher models
            super().setup(accelerator)            #   (self.accelerator, self.device, self.world_size,
            self.ref.to(self.device).eval()       #    self.grad_accum_steps are set by super().setup)
        def num_items(self, batch) -> int:        # what the step's loss is normalised by (tokens, pairs, ...)
            return batch["chosen_ids"].shape[0]
        def compute_loss(self, model, batch, num_items_in_batch):
            ...                                   # loss = (sum over this micro-batch) / num_items_in_batch
            return loss, {"rewards/margin": margin.mean()}

One optimizer step, as the loop runs it::

    micro = [algo.prepare_batch(model, b) for b in this_rank's grad_accum_steps micro-batches]
    N = all_reduce_sum(sum(algo.num_items(b) for b in micro))  # global count over ranks and micro-batches
    for b in micro: (algo.compute_loss(model, b, N)[0] * world_size).backward()   # DDP averages -> x world
    clip_grad_norm_(max_grad_norm); optimizer.step(); scheduler.step(); zero_grad()

so the gradient is exactly d/dθ [ Σ_items loss_i / N ] whatever the split into processes and micro-batches:
2 DDP processes give the same step as 1 process with the same global batch. ``N`` is clamped to >= 1, so a
step whose labels are all masked gives loss 0, never NaN.

Hooks (all optional except what your batches need):

- ``prepare_batch(model, batch)``: runs before counting, e.g. RL rollouts (generate, score, compute
  advantages). `model` may be DDP-wrapped: generate with ``self.accelerator.unwrap_model(model)`` under
  ``torch.no_grad()``. Return the batch to train on (any dict; tensors in it are already on the device).
- ``batch_uses`` (attribute) and ``select(batch, use)``: a prepared batch trains ``batch_uses`` consecutive
  steps (default 1), the ``use``-th on ``select(batch, use)`` (default: all of it; PPO picks a mini-batch;
  None skips it). A rollout is reused this way, and the next step draws new rows (see `batches`).
- ``num_items(batch)``: the normalisation count of one micro-batch (default: label tokens after the shift).
- ``compute_loss(model, batch, num_items_in_batch)``: ``(loss, metrics)``. ``loss`` must be the micro-batch's
  summed loss divided by ``num_items_in_batch`` (a 0-d tensor). ``metrics``: name -> float/0-d tensor; the
  loop logs each metric's mean over micro-batches and processes.
- ``param_groups(model)``: optimizer param groups (default: decay / no-decay split; a group may set its
  own ``lr``, the schedule scales it).
- ``evaluate(model)``: dict of eval metrics (default: token-weighted ``eval/loss`` over ``eval_dataset``).
  Called every ``eval_every`` steps and at the end; call ``super().evaluate(model)`` to keep the loss.
- ``save_model(model, path)`` / ``load_model(model, path)``: write/read a HF folder (default:
  `save_pretrained` + tokenizer / the safetensors weights). LoRA overrides these to save adapters/merge.
- ``state_dict()`` / ``load_state_dict(state)``: extra algorithm state to checkpoint (tensors, numbers).

Data: ``train_dataset`` is any map-style dataset (``len`` + ``__getitem__``; a `datasets.Dataset` works) and
``collate_fn`` turns a list of rows into a batch. The loop draws batches itself (`batches.BatchStream`): each
epoch is a permutation seeded with ``seed + epoch``, every draw takes the next ``batch_size *
grad_accum_steps * world_size`` rows (the incomplete tail of an epoch is skipped) for ``batch_uses`` steps;
the draw count and a batch still in use are checkpointed, so resuming at step ``s`` continues with exactly
the rows (and rollouts) an uninterrupted run would see.

Outputs in ``output_dir``: the final HF folder (config, safetensors, tokenizer, model code),
``train_log.jsonl`` (one line per logged step and per evaluation), ``checkpoints/`` (see `checkpoint`),
``train_result.json``, ``report.md`` with ``training_curves.png`` (`minimind_hf.report`), and tracker logs
under ``output_dir/runs``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.collate import IGNORE_INDEX, collate_rows
from ..model_card import write_model_card
from . import checkpoint as ckpt
from .acceleration import (
    CompiledRegions,
    ThreadTuner,
    attention_problem,
    compiler_problem,
    resolve_compile,
    resolve_precision,
)
from .batches import BatchStream, to_device
from .config import config_to_dict
from .interrupt import GracefulStop, TrainingInterrupted
from .optim import build_optimizer
from .schedule import CosineSchedule

logger = logging.getLogger(__name__)

__all__ = ["Algorithm", "TrainConfig", "TrainResult", "default_param_groups", "train"]

TRACKERS = ("tensorboard", "wandb", "swanlab", "none")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Settings shared by every stage (each stage's config subclasses this and adds its data fields)."""

    output_dir: str = "runs/native"  # the final HF folder; checkpoints/ and logs go inside it
    # model
    model: str | None = (
        None  # HF folder to start from (e.g. the pretrain output); None = new model from preset
    )
    preset: str = "tiny"  # MiniMindConfig.from_preset name when `model` is None
    model_overrides: dict = field(
        default_factory=dict
    )  # extra MiniMindConfig fields, e.g. {hidden_size: 128}
    tokenizer: str | None = None  # tokenizer folder; default: the `model` folder
    attn_implementation: str = "sdpa"  # eager | sdpa | flex_attention | flash_attention_2
    gradient_checkpointing: bool = False
    # optimisation
    learning_rate: float = 5e-4
    min_lr_ratio: float = 0.1  # cosine decays to min_lr_ratio * learning_rate (MiniMind: 0.1)
    warmup_steps: int = 0
    weight_decay: float = 0.01  # not applied to norms, biases and embeddings
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 = no clipping
    batch_size: int = 8  # rows per micro-batch per process
    grad_accum_steps: int = 1
    num_epochs: int = 1
    max_steps: int = 0  # optimizer steps; 0 = num_epochs over the data
    optimizer: str = "adamw"  # adamw | muon (Muon for the block matrices, AdamW for the rest; see `optim`)
    muon_lr: float = 0.02  # Muon's own rate (Keller Jordan's and nanochat's 0.02, with the original scaling)
    muon_adjust_lr: str = "original"  # original (sqrt(max(1, rows/cols))) | match_rms_adamw (Moonshot's)
    muon_momentum: float = 0.95
    muon_ns_steps: int = 5  # Newton-Schulz iterations
    # auto: bf16 autocast on GPUs with bf16 and on CPUs with bf16 instructions (avx512_bf16 / AMX), else fp32
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16
    compile: bool | str = "auto"  # torch.compile the training model: true | false | auto (see `acceleration`)
    seed: int = 42
    num_threads: int = 0  # torch CPU threads; 0 = chosen by timing steps (`acceleration.ThreadTuner`)
    # evaluation, logging, checkpoints
    eval_every: int = 0  # optimizer steps between evaluations; 0 = only at the end
    eval_at_end: bool = True  # evaluate after the last step (a recipe's eval_strategy: no is false, as trl)
    eval_max_batches: int = 0  # 0 = the whole eval split
    log_every: int = 1
    save_every: int = 0  # optimizer steps between checkpoints; 0 = none
    keep_last: int = 2  # checkpoints kept; 0 = all
    eval_batch_size: int = 0  # rows per evaluation batch; 0 = batch_size
    resume: str = "auto"  # auto (latest checkpoint in output_dir if any) | never | a checkpoint folder
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"]
    )  # tensorboard | wandb | swanlab | none
    run_name: str | None = None
    progress: bool = True  # tqdm bar
    use_cpu: bool = False  # train on the CPU even when an accelerator (CUDA, MPS, XPU, NPU...) is present
    disable_dropout: bool = False  # set every nn.Dropout's p to 0 (trl's disable_dropout)

    def validate(self) -> list[str]:
        """Problems with the values (types were checked already); an empty list means valid."""
        return (
            self._number_problems()
            + self._optimizer_problems()
            + self._run_problems()
            + self._path_problems()
        )

    def _number_problems(self) -> list[str]:
        p = []
        positive = ["learning_rate", "muon_lr", "batch_size", "grad_accum_steps", "num_epochs", "log_every"]
        for name in positive:
            if getattr(self, name) <= 0:
                p.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in [
            "muon_ns_steps",
            "warmup_steps",
            "max_steps",
            "num_threads",
            "eval_every",
            "eval_max_batches",
            "save_every",
            "keep_last",
            "eval_batch_size",
            "weight_decay",
            "max_grad_norm",
        ]:
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            p.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for f in dataclasses.fields(self):  # NaN passes every comparison above; inf would train to NaN
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                p.append(f"{f.name} must be a finite number, got {value}")
        return p

    def _optimizer_problems(self) -> list[str]:
        from .optim import MUON_ADJUST_LR, OPTIMIZERS

        p = []
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                p.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.adam_eps < 0:
            p.append(f"adam_eps must be >= 0, got {self.adam_eps}")
        if self.optimizer not in OPTIMIZERS:
            p.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.muon_adjust_lr not in MUON_ADJUST_LR:
            p.append(
                f"muon_adjust_lr must be one of {', '.join(MUON_ADJUST_LR)}, got {self.muon_adjust_lr!r}"
            )
        if not 0.0 <= self.muon_momentum < 1.0:
            p.append(f"muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if (
            self.optimizer != "muon"
        ):  # Muon's settings do nothing under AdamW: refuse them rather than drop them
            defaults = {
                f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name.startswith("muon_")
            }
            set_ = [k for k, v in defaults.items() if getattr(self, k) != v]
            if set_:
                p.append(
                    f"{', '.join(set_)} set, but optimizer is {self.optimizer!r}: they apply to "
                    "optimizer: muon"
                )
        return p

    def _run_problems(self) -> list[str]:
        """Compile, precision, attention, trackers and the model's own settings."""
        p = []
        device = "cpu" if _use_cpu(self) else torch.accelerator.current_accelerator().type
        if self.compile not in (True, False, "auto"):
            p.append(f"compile must be true, false or auto, got {self.compile!r}")
        elif self.compile is True and (problem := compiler_problem(device)) is not None:
            p.append(problem)
        if self.mixed_precision not in PRECISIONS:
            p.append(f"mixed_precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        bad = [t for t in self.report_to if t not in TRACKERS]
        if bad:
            p.append(f"report_to: unknown tracker(s) {bad}; valid: {', '.join(TRACKERS)}")
        if self.model is None:
            from ..configuration_minimind import PRESETS

            if self.preset not in PRESETS:
                p.append(f"preset: unknown {self.preset!r}; valid: {', '.join(PRESETS)}")
        if (problem := attention_problem(self.attn_implementation, device)) is not None:
            p.append(problem)
        from .common import model_problems

        return p + model_problems(self)

    def _path_problems(self) -> list[str]:
        """The folders the run reads and writes, and the checkpoint it resumes."""
        p = []
        if self.model is not None and not Path(self.model).is_dir():
            p.append(
                f"model: no such folder {self.model!r} (a Hugging Face model folder, "
                "e.g. a pretrain output_dir)"
            )
        if self.tokenizer is not None and not Path(self.tokenizer).is_dir():
            p.append(f"tokenizer: no such folder {self.tokenizer!r}")
        out = Path(self.output_dir).expanduser()
        if out.exists() and not out.is_dir():
            p.append(f"output_dir: {self.output_dir!r} is a file, not a folder")
        for name in ("model", "teacher"):  # folders the run reads (those its stage has)
            given = getattr(self, name, None)
            if isinstance(given, str) and Path(given).expanduser().resolve() == out.resolve():
                p.append(
                    f"output_dir is the {name} folder {given!r}: the run would overwrite its own input; "
                    "choose a new output_dir"
                )
        if self.resume not in ("auto", "never") and not (Path(self.resume) / "trainer_state.json").is_file():
            p.append(
                f"resume: {self.resume!r} is not a checkpoint folder (use auto, never, or "
                f"output_dir/checkpoints/step_NNNNNN)"
            )
        return p


@dataclass
class TrainResult:
    output_dir: str
    steps: int
    losses: list[
        float
    ]  # training loss of every optimizer step run in this process (not the resumed-over ones)
    eval: dict[str, float]
    seconds: float
    resumed_from: str | None = None


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only; none on norms, biases and embeddings
    (incl. a tied lm_head)."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim < 2 or "embed" in name or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class Algorithm:
    """Plain causal-LM training (the default hooks); subclass and override to make another algorithm.

    Attributes set by the constructor: `cfg`, `model`, `tokenizer`, `train_dataset`, `eval_dataset`,
    `collate_fn`. Set by `setup`: `accelerator`, `device`, `world_size`, `grad_accum_steps`.
    """

    name = "lm"
    # whether compile: auto may compile it: batches of one shape (packed rows), so one graph serves every step
    compile_friendly = False
    # optimizer steps each drawn batch is trained for (RL reuses a rollout); see `select` and `batches`
    batch_uses = 1

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        tokenizer: Any,
        train_dataset: Sequence,
        eval_dataset: Sequence | None = None,
        collate_fn: Callable[[list], dict] | None = None,
    ):
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.collate_fn = collate_fn or collate_rows

    # ----- set-up
    def setup(self, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.device = accelerator.device
        self.world_size = accelerator.num_processes
        self.grad_accum_steps = self.cfg.grad_accum_steps

    def param_groups(self, model: nn.Module) -> list[dict]:
        return default_param_groups(model, self.cfg.weight_decay)

    # ----- one micro-batch
    def prepare_batch(self, model: nn.Module, batch: dict) -> dict:
        return batch

    def select(self, batch: dict, use: int) -> dict | None:
        """What the `use`-th of the ``batch_uses`` steps of a prepared batch trains on (None: skip it)."""
        return batch

    def num_items(self, batch: dict) -> int:
        return int((batch["labels"][..., 1:] != IGNORE_INDEX).sum())

    def compute_loss(
        self, model: nn.Module, batch: dict, num_items_in_batch: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Causal LM: mean token cross-entropy over the step's label tokens (shifted inside the model).

        loss = Σ_{t: label_t != -100} -log p(label_t | tokens_<t) / num_items_in_batch
        """
        # MoE: the model adds weight * aux to each micro-batch's loss. The step's micro-batches on all
        # processes share the coefficient, so the aux loss is averaged over the step instead of summed, as the
        # cross-entropy is through num_items_in_batch.
        config = self._unwrap(model).config
        moe = {}
        if getattr(config, "use_moe", False):
            moe["aux_loss_weight"] = config.router_aux_loss_coef / (self.grad_accum_steps * self.world_size)
        out = model(
            input_ids=batch["input_ids"],
            position_ids=batch.get("position_ids"),
            attention_mask=batch.get("attention_mask"),
            labels=batch["labels"],
            num_items_in_batch=num_items_in_batch,
            **moe,
        )
        aux = getattr(out, "aux_loss", None)
        metrics = {"aux_loss": aux.detach()} if aux is not None and model.training else {}
        return out.loss, metrics

    # ----- evaluation and saving
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Token-weighted mean loss over `eval_dataset` (sharded over processes): Σ loss / Σ tokens."""
        if self.eval_dataset is None or len(self.eval_dataset) == 0:
            return {}
        acc = self.accelerator
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        idx = list(range(acc.process_index, len(self.eval_dataset), acc.num_processes))
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        for n, start in enumerate(range(0, len(idx), bs)):
            if self.cfg.eval_max_batches and n >= self.cfg.eval_max_batches:
                break
            batch = self.collate_fn([self.eval_dataset[i] for i in idx[start : start + bs]])
            batch = self.prepare_batch(model, to_device(batch, self.device))
            count = self.num_items(batch)
            if count == 0:
                continue
            one = torch.ones((), device=self.device)
            loss_sum, _ = self.compute_loss(model, batch, one)  # divided by 1 = the summed loss
            total += torch.stack(
                [loss_sum.double(), torch.tensor(float(count), device=self.device, dtype=torch.float64)]
            )
        total = acc.reduce(total, "sum") if acc.num_processes > 1 else total
        if total[1] == 0:
            return {}
        loss = (total[0] / total[1]).item()
        return {"eval/loss": loss, "eval/ppl": math.exp(min(loss, 50.0)), "eval/tokens": int(total[1].item())}

    def _unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model) if hasattr(self, "accelerator") else model

    def save_model(self, model: nn.Module, path: str | Path) -> None:
        """Write a Hugging Face folder: safetensors + config + model code + tokenizer."""
        model.save_pretrained(path, safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)

    def load_model(self, model: nn.Module, path: str | Path) -> None:
        ckpt.load_model_weights(model, path)

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass


# ------------------------------------------------------------------------------------------ helpers
def _trackers(names: list[str]) -> list[str]:
    want = [n for n in names if n != "none"]
    out = []
    for n in want:
        module = {
            "tensorboard": ("tensorboard", "tensorboardX"),
            "wandb": ("wandb",),
            "swanlab": ("swanlab",),
        }[n]
        if any(importlib.util.find_spec(m) is not None for m in module):
            out.append(n)
        else:
            logger.warning(
                "tracker %r is not installed (pip install %s); logging to train_log.jsonl only", n, module[0]
            )
    return out


# train_log.jsonl key -> the name transformers' Trainer logs it under (so trl's and our tensorboard runs
# overlay)
_TRL_TAG_NAMES = {"lr": "learning_rate", "tokens_seen": "num_input_tokens_seen"}


def _tracker_scalars(record: dict) -> dict:
    return {f"train/{_TRL_TAG_NAMES.get(k, k)}": v for k, v in record.items() if k != "step"}


def _use_cpu(cfg: TrainConfig) -> bool:
    """CPU when asked, or when torch sees no accelerator (CUDA, MPS, XPU, NPU, ...). On the CPU, accelerate's
    ``cpu=True`` is also what joins torchrun-launched processes into one gloo DDP group."""
    return cfg.use_cpu or not torch.accelerator.is_available()


def _disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _flat_config(cfg: Any) -> dict:
    out = {}
    for k, v in config_to_dict(cfg).items():
        out[k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return out


def _mean(values: list) -> float:
    vals = [float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v) for v in values]
    return sum(vals) / len(vals)


# Settings a resumed run may change without changing what it trains (how long, how often it logs and
# saves, ...).
_RESUME_FREE = frozenset(
    {"resume", "max_steps", "num_epochs", "save_every", "eval_every", "eval_at_end", "eval_max_batches",
     "eval_batch_size", "log_every", "keep_last", "progress", "report_to", "run_name", "num_threads",
     "compile"}
)  # fmt: skip


def _check_resume(cfg: TrainConfig, stage: str, checkpoint: Path, total_steps: int, explicit: bool) -> None:
    """Resume only what was asked. With ``resume=auto`` (the default) a checkpoint of another run in
    ``output_dir`` (another stage, other data or model, other hyper-parameters) or of a finished run is an
    error naming what differs and the options; ``resume=<checkpoint>`` continues it anyway, with a warning."""
    from .config import ConfigError

    state = ckpt.read_trainer_state(checkpoint)
    saved, now = state.get("config", {}), _flat_config(cfg)
    changed = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in now.items() if k in saved and saved[k] != v]
    changed = [c for c in changed if c.split(":")[0] not in _RESUME_FREE]
    if state.get("stage", stage) != stage:
        changed.insert(0, f"stage: {state['stage']!r} -> {stage!r}")
    if explicit:
        if changed:
            logger.warning("resuming %s with changed settings: %s", checkpoint, "; ".join(changed))
        return
    where = f"output_dir {cfg.output_dir!r} holds checkpoint {checkpoint.name}"
    options = (
        "resume=never (in a recipe: resume_from_checkpoint: false) to train from scratch there (its "
        "checkpoints are replaced), or a new output_dir"
    )
    if changed:
        raise ConfigError(
            [
                f"{where} of a different run ({'; '.join(changed)}). Use {options}; "
                f"resume={checkpoint} continues it anyway"
            ]
        )
    step = int(state.get("step", 0))
    if step >= total_steps:
        raise ConfigError(
            [f"{where} of a finished run (step {step} of {total_steps}): nothing to train. Raise max_steps "
             f"to extend it, or use {options}"]
        )  # fmt: skip


def _log_rows(path: Path) -> list[tuple[str, dict]]:
    """(line, record) pairs of a ``train_log.jsonl``. A last line cut off by a crash mid-write is dropped with
    a warning (the step it described is redone); a bad line elsewhere is an error naming the file and line."""
    lines = [
        (i, line) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()
    ]
    rows = []
    for k, (i, line) in enumerate(lines):
        try:
            rows.append((line, json.loads(line)))
        except json.JSONDecodeError as err:
            if k == len(lines) - 1:
                logger.warning("%s:%d: dropping a log line cut off mid-write (%s)", path, i, err.msg)
                break
            raise ValueError(
                f"{path}:{i}: not a JSON log record ({err.msg}); fix or delete the line to resume"
            ) from None
    return rows


class _JsonlLog:
    """``train_log.jsonl``: one JSON object per line (main process only)."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("", encoding="utf-8")
        elif path.exists():  # drop what the interrupted run logged after the checkpoint
            keep = [line for line, row in _log_rows(path) if row.get("step", 0) <= resume_step]
            ckpt.write_atomic(path, "".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig, algo: Algorithm) -> TrainResult:
    """Train `algo.model` with `cfg`; write the HF folder to ``cfg.output_dir``; return a `TrainResult`.

    The skeleton: set up (accelerate, the batch stream, resume, compile), then per optimizer step train,
    log, evaluate and checkpoint on their schedules; Ctrl-C / SIGTERM finish the step, save and stop (see
    `interrupt`); at the end a last checkpoint, the final evaluation and the HF folder."""
    run = _Run(cfg, algo)
    stop = GracefulStop()
    with stop:
        while run.step < run.total_steps:
            step = run.train_step()
            run.log_step(step)
            run.on_schedule()
            if stop.requested(run.accelerator):
                break
    run.bar.close()
    if stop.signal_name is not None and run.step < run.total_steps:  # a signal in the last step just ends it
        raise run.interrupted(stop.signal_name)
    return run.finish()


@dataclass
class _Step:
    """What one optimizer step leaves for logging."""

    loss: float
    lr: float
    items: int
    grad_norm: float | None
    metrics: dict[str, list]


class _Run:
    """One `train` call's state and its named parts (see `train` for the order they run in)."""

    def __init__(self, cfg: TrainConfig, algo: Algorithm):
        from tqdm.auto import tqdm

        self.cfg, self.algo = cfg, algo
        self.t_start = time.time()
        self.threads_before = torch.get_num_threads()
        self.out_dir = Path(cfg.output_dir)
        self.trackers = _trackers(cfg.report_to)
        self._start_accelerate()
        self._plan_data()
        self._resume_and_prepare()
        if self.trackers:
            self.accelerator.init_trackers(
                cfg.run_name or getattr(algo, "name", "train"), config=_flat_config(cfg)
            )
        resumed_at = self.step if self.resume_path is not None else None
        self.log = _JsonlLog(self.out_dir / "train_log.jsonl", resumed_at, self.main)
        self._announce()
        self.bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (self.main and cfg.progress),
            desc=algo.name,
            dynamic_ncols=True,
        )
        self.losses: list[float] = []
        self.t_window, self.tokens_window = time.time(), 0

    # ----- set-up
    def _start_accelerate(self) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedDataParallelKwargs

        cfg = self.cfg
        self.device_type = "cpu" if _use_cpu(cfg) else torch.accelerator.current_accelerator().type
        self.precision = resolve_precision(cfg.mixed_precision, self.device_type)
        # A run sets its own precision, whatever an earlier run in this process chose (transformers'
        # TrainingArguments resets the state the same way); the process group (PartialState) is kept.
        AcceleratorState._reset_state()
        self.accelerator = Accelerator(
            cpu=_use_cpu(cfg),
            mixed_precision=self.precision,
            log_with=self.trackers or None,
            project_dir=str(self.out_dir / "runs"),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        self.main = self.accelerator.is_main_process
        self.world = self.accelerator.num_processes
        self.algo.setup(self.accelerator)

    def _plan_data(self) -> None:
        """Which rows each step trains on (see `batches`), and so how many steps make the run."""
        cfg, algo = self.cfg, self.algo
        self.stream = BatchStream(
            algo,
            batch_size=cfg.batch_size,
            grad_accum_steps=cfg.grad_accum_steps,
            world=self.world,
            rank=self.accelerator.process_index,
            seed=cfg.seed,
            device=self.accelerator.device,
        )
        if self.stream.draws_per_epoch == 0:
            raise ValueError(
                f"the training set has {len(algo.train_dataset)} rows, fewer than one optimizer step needs "
                f"(batch_size {cfg.batch_size} x grad_accum_steps {cfg.grad_accum_steps} x "
                f"{self.world} process(es) = {self.stream.global_batch}): lower batch_size or add data"
            )
        self.steps_per_epoch = self.stream.draws_per_epoch * self.stream.uses
        self.total_steps = cfg.max_steps or cfg.num_epochs * self.steps_per_epoch

    def _resume_and_prepare(self) -> None:
        """Weights first (before the optimizer exists), then optimizer, schedule, data position, algorithm
        state; accelerate's wrapping and compile; RNG last, as nothing after it may consume randomness."""
        cfg, algo, acc = self.cfg, self.algo, self.accelerator
        self.resume_path = None
        if cfg.resume == "auto":
            self.resume_path = ckpt.find_latest_checkpoint(self.out_dir)
        elif cfg.resume != "never":
            self.resume_path = Path(cfg.resume)
        if self.resume_path is not None:
            _check_resume(cfg, algo.name, self.resume_path, self.total_steps, explicit=cfg.resume != "auto")
        model = algo.model
        if self.resume_path is not None:
            logger.info("resuming from %s", self.resume_path)
            algo.load_model(model, self.resume_path / "model")
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.disable_dropout:
            _disable_dropout(model)
        model.to(acc.device)
        model.train()
        self.optimizer = build_optimizer(cfg, algo.param_groups(model), model)
        self.scheduler = CosineSchedule(self.optimizer, self.total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
        self.step, self.tokens_seen = 0, 0
        if self.resume_path is not None:
            self._restore_training_state()
        self.start_step = self.step
        self.model, self.optimizer = acc.prepare(model, self.optimizer)
        algo.model = self.model
        self.compiled = resolve_compile(
            cfg.compile,
            algo=algo,
            model=acc.unwrap_model(self.model),
            total_steps=self.total_steps,
            device_type=self.device_type,
        )
        # swapped in for training forwards only; evaluation, generation and saving see the plain model
        self.regions = CompiledRegions(self.model) if self.compiled else None
        self.tuner = ThreadTuner(cfg.num_threads) if self.device_type == "cpu" else None
        if self.resume_path is not None:
            rng = ckpt.load_rng(self.resume_path, acc.process_index)
            if rng is not None:
                ckpt.restore_rng_state(*rng)

    def _restore_training_state(self) -> None:
        rank = self.accelerator.process_index
        state, extra = ckpt.load_training_state(self.resume_path, self.optimizer, self.scheduler)
        self.step, self.tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        self.stream.restore(state, ckpt.load_rank_state(self.resume_path, rank))
        if extra is not None:
            self.algo.load_state_dict(extra)
        if int(state.get("world_size", self.world)) != self.world:
            logger.warning(
                "resuming with %d processes, the checkpoint had %s: the global batch and hence the "
                "data order differ from an uninterrupted run",
                self.world,
                state.get("world_size"),
            )

    def _announce(self) -> None:
        if not self.main:
            return
        algo, tuner = self.algo, self.tuner
        logger.info(
            "%s: %d rows, %d steps/epoch, %d steps (global batch %d rows, %d process(es)), start at %d",
            algo.name,
            len(algo.train_dataset),
            self.steps_per_epoch,
            self.total_steps,
            self.stream.global_batch,
            self.world,
            self.step,
        )
        logger.info(
            "%s on %s: precision %s, compile %s, optimizer %s, threads %s",
            algo.name,
            self.device_type,
            {"no": "fp32"}.get(self.precision, self.precision),
            "on" if self.compiled else "off",
            self.cfg.optimizer,
            (tuner.current if tuner.fixed else "tuned") if tuner is not None else "-",
        )

    # ----- one optimizer step
    def train_step(self) -> _Step:
        """This step's micro-batches (see `batches`), their losses' backward passes, clip, optimizer step."""
        cfg, algo, acc, world = self.cfg, self.algo, self.accelerator, self.world
        compiled = self.regions
        if self.tuner is not None:
            self.tuner.before_step()
            if self.tuner.in_trial:
                compiled = None
        step_model = compiled.forward_model() if compiled is not None else self.model
        regions = compiled.active if compiled is not None else nullcontext

        def prepare(batch):
            with acc.autocast():  # every model an algorithm runs (reference, critic) alike
                return algo.prepare_batch(step_model, batch)

        # None = a micro-batch skipped (PPO's early stop); every process skips the same ones
        micro = self.stream.next_step(prepare)
        self.epoch = self.stream.epoch
        # the step's loss is Σ (token losses) / N, with N counted over every micro-batch and process
        count = torch.tensor(float(sum(algo.num_items(b) for b in micro if b is not None)), device=acc.device)
        global_count = acc.reduce(count, "sum") if world > 1 else count
        denom = global_count.clamp(min=1.0)
        step_loss = torch.zeros((), device=acc.device)
        metric_values: dict[str, list] = {}
        n_tokens = 0
        last = max(i for i, b in enumerate(micro) if b is not None)  # its backward syncs DDP's gradients
        for i, batch in enumerate(micro):
            if batch is None:
                continue
            with nullcontext() if i == last or world == 1 else acc.no_sync(self.model):
                with acc.autocast(), regions():
                    loss, metrics = algo.compute_loss(step_model, batch, denom)
                acc.backward(loss * world)  # DDP averages gradients over processes; undo it
            step_loss += loss.detach().float()
            for name, value in metrics.items():
                metric_values.setdefault(name, []).append(value)
            if isinstance(batch, dict) and isinstance(batch.get("input_ids"), torch.Tensor):
                n_tokens += batch["input_ids"].numel()
        grad_norm = None
        if cfg.max_grad_norm > 0:
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        group = self.optimizer.param_groups[
            0
        ]  # Muon's, with optimizer: muon; log the rate of `learning_rate`
        lr = cfg.learning_rate * group["lr"] / group["base_lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

        if world > 1:
            step_loss = acc.reduce(step_loss, "sum")
            n_tokens = int(acc.reduce(torch.tensor(n_tokens, device=acc.device), "sum"))
        self.tokens_seen += n_tokens
        self.tokens_window += n_tokens
        loss_value = step_loss.item()
        if self.tuner is not None:
            self.tuner.after_step(n_tokens, warmup=self.step == self.start_step + 1)
        self.losses.append(loss_value)
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"step {self.step}: loss is {loss_value}; lower learning_rate or check the data"
            )
        grad = float(grad_norm) if grad_norm is not None else None
        return _Step(loss_value, lr, int(global_count.item()), grad, metric_values)

    def log_step(self, s: _Step) -> None:
        """Every ``log_every`` steps (and the last): train_log.jsonl, trackers, the progress bar."""
        self.bar.update(1)
        if not (self.step % self.cfg.log_every == 0 or self.step == self.total_steps):
            return
        acc = self.accelerator
        elapsed = max(time.time() - self.t_window, 1e-9)
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "loss": s.loss,
            "lr": s.lr,
            "items": s.items,
            "tokens_per_sec": self.tokens_window / elapsed,
            "tokens_seen": self.tokens_seen,
        }
        if s.grad_norm is not None:
            record["grad_norm"] = s.grad_norm
        if self.tuner is not None and self.tuner.active:
            record["threads"] = self.tuner.current
        for name, values in s.metrics.items():
            value = _mean(values)
            if self.world > 1:
                value = float(acc.reduce(torch.tensor(value, device=acc.device), "mean"))
            record[name] = value
        self.log.write(record)
        if self.trackers:
            acc.log(_tracker_scalars(record), step=self.step)
        self.bar.set_postfix(loss=f"{s.loss:.4f}", lr=f"{s.lr:.2e}", tok_s=f"{record['tokens_per_sec']:.0f}")
        self.t_window, self.tokens_window = time.time(), 0

    def on_schedule(self) -> None:
        """Evaluate every ``eval_every`` and checkpoint every ``save_every`` steps (the last step:
        `finish`)."""
        cfg, step = self.cfg, self.step
        if cfg.eval_every and step % cfg.eval_every == 0 and step < self.total_steps:
            self.evaluate()
        if cfg.save_every and step % cfg.save_every == 0 and step < self.total_steps:
            self.save()

    # ----- evaluation, checkpoints, the end
    def evaluate(self) -> dict:
        model, acc = self.model, self.accelerator
        model.eval()
        with acc.autocast():
            metrics = self.algo.evaluate(model)
        model.train()
        if metrics:
            self.log.write({"step": self.step, **metrics})
            if self.trackers:
                acc.log(metrics, step=self.step)
            if self.main:
                logger.info(
                    "step %d eval: %s", self.step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                )
        return metrics

    def save(self) -> Path | None:
        acc, algo = self.accelerator, self.algo
        state = {
            "step": self.step,
            **self.stream.position(),
            "tokens_seen": self.tokens_seen,
            "total_steps": self.total_steps,
            "world_size": self.world,
            "stage": algo.name,
            "config": _flat_config(self.cfg),
        }
        return ckpt.save_checkpoint(
            self.out_dir,
            self.step,
            accelerator=acc,
            save_model=lambda p: algo.save_model(acc.unwrap_model(self.model), p),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            trainer_state=state,
            extra_state=algo.state_dict(),
            rank_state=self.stream.window_state(),
            keep_last=self.cfg.keep_last,
        )

    def interrupted(self, signal_name: str) -> TrainingInterrupted:
        """A checkpoint of the steps done (or the last one there is), as the error that ends the run."""
        saved = self.save() if self.step > self.start_step else ckpt.find_latest_checkpoint(self.out_dir)
        return TrainingInterrupted(self.step, self.total_steps, str(saved) if saved else None, signal_name)

    def finish(self) -> TrainResult:
        """A last checkpoint (so `resume=auto` on a finished run has nothing left to redo), the final
        evaluation, the HF folder with its model card, train_result.json and the report."""
        cfg, algo, acc = self.cfg, self.algo, self.accelerator
        if cfg.save_every and not (self.resume_path is not None and self.step == self.start_step):
            self.save()
        eval_metrics = self.evaluate() if cfg.eval_at_end else {}
        acc.wait_for_everyone()
        resumed_from = str(self.resume_path) if self.resume_path else None
        if self.main:
            algo.save_model(acc.unwrap_model(self.model), self.out_dir)
            write_model_card(
                self.out_dir,
                stage=algo.name,
                backend="native",
                base_model=cfg.model,
                data=list(getattr(cfg, "data", [])),
            )
            result_json = {
                "steps": self.step,
                "final_loss": self.losses[-1] if self.losses else None,
                "eval": eval_metrics,
                "tokens_seen": self.tokens_seen,
                "seconds": round(time.time() - self.t_start, 2),
                "resumed_from": resumed_from,
                "config": config_to_dict(cfg),
            }
            (self.out_dir / "train_result.json").write_text(
                json.dumps(result_json, indent=2), encoding="utf-8"
            )
            _write_report(self.out_dir, algo.name, result_json)
            logger.info("saved the model to %s", self.out_dir)
        acc.wait_for_everyone()
        if self.trackers:
            acc.end_training()
        # hand the model back as it came: accelerate wrapped its forward in autocast for mixed precision
        acc.unwrap_model(self.model, keep_fp32_wrapper=False)
        torch.set_num_threads(self.threads_before)
        return TrainResult(
            output_dir=str(self.out_dir),
            steps=self.step,
            losses=self.losses,
            eval=eval_metrics,
            seconds=time.time() - self.t_start,
            resumed_from=resumed_from,
        )


def _write_report(out_dir: Path, stage: str, result: dict) -> None:
    from ..report import read_log, write_stage_report

    records = read_log(out_dir / "train_log.jsonl")
    rewards = [r["reward"] for r in records if isinstance(r.get("reward"), (int, float))]
    facts = {
        "steps": result["steps"],
        "final loss": result["final_loss"],
        "first reward": rewards[0] if rewards else None,
        "last reward": rewards[-1] if rewards else None,
        **{f"eval {k}": v for k, v in (result["eval"] or {}).items()},
        "tokens seen": result["tokens_seen"] or None,
        "seconds": result["seconds"],
    }
    write_stage_report(out_dir, stage, records, facts)
