"""LoRA (Hu et al. 2021), from scratch: low-rank adapters on chosen linear layers, trained alone, merged back.

A frozen linear ``y = x W^T`` (W: (out, in)) becomes

    y = x W^T + (alpha / r) * dropout(x) A^T B^T          A: (r, in), B: (out, r)

A starts random (Kaiming-uniform, as peft), B at zero, so the adapted model starts equal to the base one.
Only A and B train. ``merge_lora`` folds the update into the weight, ``W <- W + (alpha / r) B A``, and
returns plain ``nn.Linear`` layers: a normal MiniMind checkpoint, no adapter code needed to load it.

Module and parameter names follow peft (``<target>.base_layer``, ``<target>.lora_A``, ``<target>.lora_B``),
so :func:`save_lora` writes a folder that ``peft.PeftModel.from_pretrained`` loads (tested). Defaults: the
original's rank 16 on ``q_proj``, ``o_proj`` (its only square linears), alpha = rank (scaling 1, as the
original, which has no alpha), no dropout.

Training LoRA is SFT with only the adapters trainable: :func:`apply_lora` freezes everything else, so the
SFT step and optimiser (which take ``requires_grad`` parameters) need nothing else.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .loop import Algorithm, TrainResult, train
from .sft import SFTConfig, build_sft
from .stages import register_stage

logger = logging.getLogger(__name__)

__all__ = [
    "LoRA",
    "LoRAConfig",
    "LoRALinear",
    "LoRASpec",
    "build_lora",
    "run_lora",
    "apply_lora",
    "load_lora",
    "lora_state_dict",
    "merge_lora",
    "save_lora",
]


@dataclass
class LoRASpec:
    """Which linears get adapters and how big they are."""

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Sequence[str] = field(default_factory=lambda: ["q_proj", "o_proj"])

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


@dataclass
class LoRAConfig(SFTConfig):
    """The ``lora`` stage: SFT data and settings + the adapters (the original's rank 16 on q_proj, o_proj,
    lr 1e-4). Output: the merged model as the HF folder, the adapters (peft format) in ``adapter/``."""

    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "o_proj"])
    learning_rate: float = 1e-4

    def validate(self) -> list[str]:
        p = super().validate()
        if self.lora_rank <= 0:
            p.append(f"lora_rank must be > 0, got {self.lora_rank}")
        if not 0.0 <= self.lora_dropout < 1.0:
            p.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            p.append("lora_target_modules is empty (e.g. [q_proj, o_proj] or all: q_proj..down_proj)")
        return p

    def spec(self) -> LoRASpec:
        return LoRASpec(self.lora_rank, self.lora_alpha, self.lora_dropout, list(self.lora_target_modules))


class LoRALinear(nn.Module):
    """``base(x) + scaling * lora_B(lora_A(dropout(x)))`` around a frozen ``nn.Linear``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base_layer = base
        self.base_layer.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **kw)  # weight (r, in)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **kw)  # weight (out, r)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., in) -> (..., out)
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """``scaling * B @ A``, (out, in): what merging adds to the base weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def merged(self) -> nn.Linear:
        """The base linear with the update folded in (a new module; this one is unchanged)."""
        base = self.base_layer
        out = nn.Linear(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device=base.weight.device,
            dtype=base.weight.dtype,
        )
        with torch.no_grad():
            out.weight.copy_(base.weight + self.delta_weight().to(base.weight.dtype))
            if base.bias is not None:
                out.bias.copy_(base.bias)
        return out


def _targets(model: nn.Module, names: Sequence[str]) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in names]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: nn.Module, config: LoRASpec | None = None) -> list[str]:
    """Wrap every ``nn.Linear`` whose last name is in ``config.target_modules``; freeze all other parameters.

    Returns the wrapped module names. Raises if nothing matched (lists the linear layer names there are)."""
    config = config or LoRASpec()
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA adapters: merge_lora(model) first")
    names = _targets(model, config.target_modules)
    if not names:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"no linear layer matches target_modules={list(config.target_modules)}; "
            f"linear layer names in this model: {linear}"
        )
    model.requires_grad_(False)
    for name in names:
        _set_module(
            model, name, LoRALinear(model.get_submodule(name), config.rank, config.alpha, config.dropout)
        )
    model.lora_config = config  # remembered for save_lora
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA r=%d alpha=%g on %d layers: %d trainable of %d parameters (%.2f%%)",
        config.rank,
        config.alpha,
        len(names),
        n_train,
        n_all,
        100 * n_train / n_all,
    )
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every ``LoRALinear`` by its merged ``nn.Linear`` (in place) and unfreeze nothing.
    Returns model."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        _set_module(model, name, model.get_submodule(name).merged())
    if hasattr(model, "lora_config"):
        del model.lora_config
    logger.info("merged %d LoRA layers", len(names))
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights, under the model's own names (``...q_proj.lora_A.weight``)."""
    return {
        k: v.detach().clone() for k, v in model.state_dict().items() if ".lora_A." in k or ".lora_B." in k
    }


def save_lora(model: nn.Module, path: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write the adapters as a peft adapter folder (``adapter_model.safetensors`` +
    ``adapter_config.json``)."""
    from safetensors.torch import save_file

    cfg: LoRASpec = model.lora_config
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"base_model.model.{k}": v.contiguous() for k, v in lora_state_dict(model).items()}
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    (path / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": cfg.rank,
                "lora_alpha": cfg.alpha,
                "lora_dropout": cfg.dropout,
                "target_modules": sorted(cfg.target_modules),
                "bias": "none",
                "fan_in_fan_out": False,
                "base_model_name_or_path": base_model_name_or_path,
                "inference_mode": True,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return path


def load_lora(model: nn.Module, path: str | Path) -> nn.Module:
    """Apply adapters saved by :func:`save_lora` (or by peft, same key layout) to a base model."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    apply_lora(
        model,
        LoRASpec(
            rank=meta["r"],
            alpha=meta["lora_alpha"],
            dropout=meta.get("lora_dropout", 0.0),
            target_modules=meta["target_modules"],
        ),
    )
    state = {
        k.removeprefix("base_model.model.").replace(".default.", "."): v
        for k, v in load_file(str(path / "adapter_model.safetensors")).items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    lora_missing = [k for k in missing if ".lora_" in k]
    if lora_missing or unexpected:
        raise ValueError(
            f"adapter {path} does not fit: missing {lora_missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


class LoRA(Algorithm):
    """The loop's LoRA: SFT on a model whose only trainable parameters are the adapters.

    ``save_model`` writes the merged model (a plain MiniMind folder) and the adapters in ``adapter/``;
    ``load_model`` (resume) loads the adapters back into the adapted model."""

    name = "lora"

    def save_model(self, model, path) -> None:
        import copy

        save_lora(model, Path(path) / "adapter")
        merged = merge_lora(copy.deepcopy(model))
        merged.save_pretrained(path, safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)

    def load_model(self, model, path) -> None:
        from safetensors.torch import load_file

        state = {
            k.removeprefix("base_model.model."): v
            for k, v in load_file(str(Path(path) / "adapter" / "adapter_model.safetensors")).items()
        }
        model.load_state_dict(state, strict=False)


def build_lora(cfg: LoRAConfig) -> LoRA:
    sft = build_sft(cfg)  # same data pipeline and model as SFT
    apply_lora(sft.model, cfg.spec())
    return LoRA(cfg, sft.model, sft.tokenizer, sft.train_dataset, sft.eval_dataset, sft.collate_fn)


def run_lora(cfg: LoRAConfig) -> TrainResult:
    return train(cfg, build_lora(cfg))


register_stage("lora", LoRAConfig, run_lora, help="LoRA fine-tuning on SFT data (adapters + merged model)")
