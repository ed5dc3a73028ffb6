"""Merge a LoRA adapter into its base model and write a full folder (`merge-lora`).

Every adapter format is read into the same neutral form, an `Adapter`: a list of low-rank updates
`W[module] += scale * B @ A` plus optional full replacement weights; one function merges that into the
base state dict (in fp32, cast back to the base dtype). A format is a pair of functions registered with
`register_adapter_format(name, detect, read)`:

- `peft` (built in): a folder with `adapter_config.json` (`peft_type: LORA`) and `adapter_model.safetensors`
  (or `.bin`), keys `base_model.model.<module>.lora_A.weight` [r, in] / `lora_B.weight` [out, r];
  `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA), `rank_pattern` / `alpha_pattern`, and `modules_to_save`
  (full weights) are honoured. DoRA, LoRA biases, embedding LoRA, `target_parameters` and trainable-token
  adapters are refused with a message rather than merged wrongly.
- `minimind-pth` (built in): the original MiniMind's LoRA `.pth` (`{module}.lora.A.weight` [r, in] /
  `.lora.B.weight` [out, r], added unscaled to the square linears).

The native LoRA trainer (`minimind_hf/native/lora.py`) saves peft folders, so it needs no reader of its own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .folders import (
    ConversionError,
    check_tokenizer_arg,
    floating_dtype,
    model_type_of,
    parse_dtype,
    read_model_folder,
)

logger = logging.getLogger(__name__)


@dataclass
class LoraUpdate:
    """`weight of <module>` += scale * B @ A, with A [r, in] and B [out, r]."""

    module: str
    A: torch.Tensor
    B: torch.Tensor
    scale: float


@dataclass
class Adapter:
    format: str
    source: str
    updates: list[LoraUpdate] = field(default_factory=list)
    replacements: dict[str, torch.Tensor] = field(default_factory=dict)  # full weights (peft modules_to_save)


# name -> (detect(path) -> bool, read(path) -> Adapter); tried in registration order.
ADAPTER_FORMATS: dict[str, tuple[Callable[[Path], bool], Callable[[Path], Adapter]]] = {}


def register_adapter_format(
    name: str, detect: Callable[[Path], bool], read: Callable[[Path], Adapter]
) -> None:
    """Teach `merge-lora` a new adapter format."""
    ADAPTER_FORMATS[name] = (detect, read)


def read_adapter(path: str | os.PathLike) -> Adapter:
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"adapter {path}: no such file or folder")
    for detect, read in ADAPTER_FORMATS.values():
        if detect(path):
            return read(path)
    raise ConversionError(
        f"{path} is not a known LoRA adapter (formats: {', '.join(ADAPTER_FORMATS)}); a peft adapter folder "
        "has adapter_config.json and adapter_model.safetensors, the original MiniMind's is a .pth of "
        "{module}.lora.A/B.weight"
    )


# ------------------------------------------------------------------------------------------------ peft

_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
_PEFT_UNSUPPORTED_FLAGS = {
    "use_dora": "DoRA adapters",
    "lora_bias": "LoRA biases (lora_bias=True)",
    "target_parameters": "LoRA on raw parameters (target_parameters, e.g. fused MoE experts)",
    "trainable_token_indices": "trainable-token adapters",
    "layer_replication": "layer replication",
    "use_qalora": "QA-LoRA",
    "alora_invocation_tokens": "aLoRA",
}


def _pattern_value(patterns: dict, module: str, default):
    """peft's rule (`get_pattern_key`): the first pattern that matches the end of the module name wins."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _is_peft(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file()


def _read_peft(path: Path) -> Adapter:
    cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    if cfg.get("peft_type") != "LORA":
        raise ConversionError(f"{path}: peft_type {cfg.get('peft_type')!r}; only LORA adapters can be merged")
    refused = [what for key, what in _PEFT_UNSUPPORTED_FLAGS.items() if cfg.get(key)]
    if refused:
        raise ConversionError(f"{path}: merging {', '.join(refused)} is not supported")
    if cfg.get("fan_in_fan_out"):
        raise ConversionError(f"{path}: fan_in_fan_out=True (Conv1D/GPT-2 layers) does not apply to MiniMind")

    if (path / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        weights = load_file(path / "adapter_model.safetensors")
    elif (path / "adapter_model.bin").is_file():
        weights = torch.load(path / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ConversionError(f"{path}: no adapter_model.safetensors (or adapter_model.bin)")

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    adapter = Adapter(format="peft", source=str(path))
    for key, value in weights.items():
        if "lora_embedding_" in key or "lora_magnitude_vector" in key:
            raise ConversionError(f"{path}: {key}: embedding LoRA / DoRA weights cannot be merged here")
        m = _PEFT_KEY.match(key)
        if m:
            pairs.setdefault(m.group("module"), {})[m.group("which")] = value
        elif ".lora_" in key:
            raise ConversionError(f"{path}: unrecognised LoRA key {key}")
        else:  # modules_to_save: a full copy of a base weight
            adapter.replacements[key.removeprefix("base_model.model.")] = value

    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ConversionError(
                f"{path}: {module} has lora_{''.join(ab)} only; need both lora_A and lora_B"
            )
        rank = _pattern_value(cfg.get("rank_pattern"), module, cfg["r"])
        alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg["lora_alpha"])
        if ab["A"].shape[0] != rank or ab["B"].shape[1] != rank:
            raise ConversionError(
                f"{path}: {module}: lora_A {tuple(ab['A'].shape)} / lora_B {tuple(ab['B'].shape)} do not "
                f"have rank {rank}"
            )
        scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
        adapter.updates.append(LoraUpdate(module, ab["A"], ab["B"], scale))
    if not adapter.updates and not adapter.replacements:
        raise ConversionError(f"{path}: the adapter holds no weights")
    return adapter


register_adapter_format("peft", _is_peft, _read_peft)


# ---------------------------------------------------------------------------------- the original's .pth
# The original MiniMind's model_lora.py: a `lora` child on each adapted nn.Linear with A [r, in] and
# B [out, r] and no scaling (y = W x + B A x); save_lora writes `{module}.lora.{A,B}.weight` with torch.save.
_ORIGINAL_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora\.(?P<which>[AB])\.weight$")


def _is_original_lora(path: Path) -> bool:
    return path.is_file() and path.suffix == ".pth"


def _read_original_lora(path: Path) -> Adapter:
    from .pth import read_pth  # weights-only load, DDP / compile prefixes stripped

    state = read_pth(path)
    if not state:
        raise ConversionError(f"{path}: expected a state dict of LoRA weights")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _ORIGINAL_LORA_KEY.match(key)
        if m is None:
            raise ConversionError(
                f"{path}: {key} is not a LoRA weight of the original's layout "
                f"({{module}}.lora.A.weight / .B.weight)"
            )
        pairs.setdefault(m.group("module"), {})[m.group("which")] = value
    adapter = Adapter(format="minimind-pth", source=str(path))
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ConversionError(f"{path}: {module} has lora.{''.join(ab)} only; need both A and B")
        if ab["A"].shape[0] != ab["B"].shape[1]:
            raise ConversionError(
                f"{path}: {module}: A {tuple(ab['A'].shape)} and B {tuple(ab['B'].shape)} "
                "disagree on the rank"
            )
        adapter.updates.append(LoraUpdate(module, ab["A"], ab["B"], 1.0))
    return adapter


register_adapter_format("minimind-pth", _is_original_lora, _read_original_lora)


# ----------------------------------------------------------------------------------------------- merge


def merge_into_state_dict(state: dict[str, torch.Tensor], adapter: Adapter) -> dict[str, torch.Tensor]:
    """Return a new state dict with the adapter merged (fp32 arithmetic, the base dtype kept)."""
    state = dict(state)
    for key, value in adapter.replacements.items():
        if key not in state:
            raise ConversionError(f"{adapter.source}: full weight {key} has no counterpart in the base model")
        if value.shape != state[key].shape:
            raise ConversionError(
                f"{adapter.source}: {key} has shape {tuple(value.shape)}, the base has "
                f"{tuple(state[key].shape)}"
            )
        state[key] = value.to(state[key].dtype)
    for up in adapter.updates:
        key = f"{up.module}.weight"
        if key not in state:
            raise ConversionError(
                f"{adapter.source}: LoRA targets {up.module}, which is not a weight of the base model "
                "(was the adapter trained on another model?)"
            )
        base = state[key]
        delta = up.B.float() @ up.A.float()
        if delta.shape != base.shape:
            raise ConversionError(
                f"{adapter.source}: {up.module}: B @ A has shape {tuple(delta.shape)}, "
                f"the base weight {tuple(base.shape)}"
            )
        state[key] = (base.float() + up.scale * delta).to(base.dtype)
    return state


def check_adapter_base(adapter: str | os.PathLike, base: str | os.PathLike) -> None:
    """Refuse a peft adapter recorded against another local base folder whose weights differ from `base`'s.
    A Hub name or a folder that no longer exists cannot be checked: that is logged, not refused."""
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        return
    recorded = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not recorded:
        return
    recorded_path = Path(recorded).expanduser()
    if not recorded_path.is_dir():
        logger.info(
            "adapter %s names base %r, which is not a local folder here: not checked", adapter, recorded
        )
        return
    if recorded_path.resolve() == Path(base).resolve() or _same_weights(recorded_path, Path(base)):
        return
    raise ConversionError(
        f"adapter {adapter} was trained on {recorded}, whose weights differ from {base}'s: merging it into "
        f"{base} gives a model neither was trained as. Pass the base it was trained on, or "
        "--allow-other-base to merge anyway"
    )


def _same_weights(a: Path, b: Path) -> bool:
    import hashlib

    def digest(folder: Path) -> list[tuple[str, str]]:
        out = []
        for f in sorted(folder.glob("*.safetensors")):
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out.append((f.name, h.hexdigest()))
        return out

    return digest(a) == digest(b)


def merge_lora(
    base: str | os.PathLike,
    adapter: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "auto",
    tokenizer: str | os.PathLike | None = None,
    force: bool = False,
    allow_other_base: bool = False,
) -> Path:
    """Base model folder (MiniMind or Qwen3-family) + adapter -> a full folder of the same kind.

    An adapter whose ``base_model_name_or_path`` is a local folder with other weights than `base` is refused
    (same shapes merge without error into a wrong model) unless `allow_other_base`."""
    check_tokenizer_arg(tokenizer)
    from transformers import AutoConfig

    from .hf import build_model, save_folder

    kind = model_type_of(base)
    if not allow_other_base:
        check_adapter_base(adapter, base)
    config, state = read_model_folder(base)
    lora = read_adapter(adapter)
    merged = merge_into_state_dict(state, lora)
    target_dtype = parse_dtype(dtype) or floating_dtype(state)
    model_config = config if kind == "minimind" else AutoConfig.from_pretrained(os.fspath(base))
    model = build_model(kind, model_config, merged, target_dtype)
    logger.info("merged %d LoRA updates (%s adapter %s)", len(lora.updates), lora.format, adapter)
    # The adapter folder's tokenizer wins when it has one (SFT may have changed the template).
    return save_folder(
        model,
        out,
        force=force,
        sources=[tokenizer, adapter, base],
        generation_source=base,
        made_by="merge-lora",
        base_model=base,
    )
