"""The original MiniMind's native `.pth` checkpoints <-> MiniMind folders (`from-pth` / `to-pth`).

A native checkpoint (`out/{stage}_{hidden}[_moe].pth` in jingyaogong/minimind) is a plain state dict in
fp16 with transformers' Qwen3 key names, except for MoE experts, which are stored one module per expert:

    model.layers.{i}.mlp.gate.weight                        [E, H]   (router; same key here)
    model.layers.{i}.mlp.experts.{e}.gate_proj.weight      [I, H]   -> experts.gate_up_proj[e, :I]
    model.layers.{i}.mlp.experts.{e}.up_proj.weight        [I, H]   -> experts.gate_up_proj[e, I:]
    model.layers.{i}.mlp.experts.{e}.down_proj.weight      [H, I]   -> experts.down_proj[e]

`lm_head.weight` is present and equal to `model.embed_tokens.weight` (tied). The file has no config: give
a preset (`--preset minimind3`, `--preset minimind2-small`, ...) or a config.json (ours, or the original's,
whose `rope_theta` / `rope_scaling` / `inference_rope_scaling` / `n_routed_experts` fields are understood).
Loading always uses `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch

from .folders import (
    ConversionError,
    atomic_output_file,
    check_tokenizer_arg,
    floating_dtype,
    parse_dtype,
    read_model_folder,
)

logger = logging.getLogger(__name__)

_EXPERT_KEY = re.compile(
    r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$"
)
# Prefixes a checkpoint picks up from DDP or torch.compile wrappers.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Rotary tables some versions of the original registered as buffers; recomputed from the config here.
_IGNORED_KEYS = re.compile(r"(^|\.)(freqs_cos|freqs_sin|rotary_emb\.inv_freq)$")

# Original MiniMind config field -> ours (fields that are the same are passed through).
_ORIGINAL_ALIASES = {"n_routed_experts": "num_experts", "aux_loss_alpha": "router_aux_loss_coef"}
_ORIGINAL_ONLY = {
    "flash_attn",
    "scoring_func",
    "seq_aux",
    "n_shared_experts",
    "architectures",
    "auto_map",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "model_type",
}


def config_from_original(raw: dict):
    """MiniMindConfig from our config.json or the original MiniMind's config fields."""
    from minimind_hf import MiniMindConfig

    raw = dict(raw)
    if raw.get("use_moe") and raw.get("n_shared_experts"):  # dense minimind2 configs carry the default 1 too
        raise ConversionError(
            f"n_shared_experts={raw['n_shared_experts']}: shared experts "
            "(older MiniMind MoE) are not supported"
        )
    if raw.get("scoring_func", "softmax") != "softmax":
        raise ConversionError(f"scoring_func={raw['scoring_func']!r}: only the softmax router is supported")
    fields = {}
    for key, value in raw.items():
        if key in _ORIGINAL_ONLY:
            continue
        fields[_ORIGINAL_ALIASES.get(key, key)] = value
    if fields.get("use_moe") and "router_top1_gradient" not in fields:
        # the original's top-1 router gets no gradient from the LM loss: keep its training dynamics
        fields["router_top1_gradient"] = False
        logger.info("router_top1_gradient: false (the original's behaviour; set it true to train the router)")
    return MiniMindConfig(**fields)


def resolve_config(preset: str | None = None, config: str | os.PathLike | dict | None = None, **overrides):
    """A MiniMindConfig from a preset name and/or a config.json path (or dict), plus keyword overrides."""
    from minimind_hf import PRESETS, MiniMindConfig

    if (preset is None) == (config is None):
        raise ConversionError(
            "a .pth checkpoint has no config: give exactly one of a preset "
            f"({', '.join(PRESETS)}) or a config.json"
        )
    if preset is not None:
        return MiniMindConfig.from_preset(preset, **overrides)
    if isinstance(config, dict):
        raw = config
    else:
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConversionError(f"config {config}: no such file")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConversionError(f"--config {path}: not a JSON config ({e})") from None
        if not isinstance(raw, dict):
            raise ConversionError(f"--config {path}: expected a JSON object of config fields")
    return config_from_original({**raw, **overrides})


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every weight of a MiniMind model with `config` (built on the meta device, no
    memory)."""
    from minimind_hf import MiniMindForCausalLM

    with torch.device("meta"):
        model = MiniMindForCausalLM(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _matching_presets(state: dict[str, torch.Tensor]) -> list[str]:
    """Presets whose shapes fit an original-layout state dict exactly (vocab size taken from the
    embedding)."""
    from minimind_hf import PRESETS, MiniMindConfig

    vocab = state["model.embed_tokens.weight"].shape[0]
    state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    found = []
    for name in PRESETS:
        cfg = MiniMindConfig.from_preset(name, vocab_size=vocab)
        try:
            ours = fuse_experts(state, cfg.num_experts) if cfg.use_moe else state
        except ConversionError:
            continue
        shapes = {k: v for k, v in expected_shapes(cfg).items() if k != "lm_head.weight"}
        if set(shapes) == set(ours) and all(tuple(ours[k].shape) == s for k, s in shapes.items()):
            found.append(name)
    return found


def read_pth(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a native checkpoint safely (weights only) and strip DDP/compile prefixes and rotary buffers."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, non-tensor objects refused by weights_only
        raise ConversionError(
            f"{path}: not a loadable weights-only state dict ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]})"
        ) from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # a resume checkpoint {"model": ..., "optimizer": ...}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: expected a plain state dict (key -> tensor)")
    state = {}
    for key, value in obj.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if _IGNORED_KEYS.search(key):
            continue
        state[key] = value
    return state


def read_original_folder(folder, preset, config) -> tuple[dict[str, torch.Tensor], dict | str | None]:
    """(state dict, config) of a folder saved by the original's ``save_pretrained``: its safetensors (or
    pytorch_model.bin) and, unless a preset or config is given, its config.json with ``use_qk_norm`` as the
    weights say (the original's config has no such field)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        state = {k: v for f in files for k, v in load_file(f).items()}
    elif (folder / "pytorch_model.bin").is_file():
        state = read_pth(folder / "pytorch_model.bin")
    else:
        raise ConversionError(f"{folder}: no *.safetensors or pytorch_model.bin weights")
    state = {k: v for k, v in state.items() if not _IGNORED_KEYS.search(k)}
    if preset is not None or config is not None:
        return state, config
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder}: no config.json; give --preset or --config")
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.setdefault("use_qk_norm", any(k.endswith("self_attn.q_norm.weight") for k in state))
    return state, raw


def fuse_experts(state: dict[str, torch.Tensor], num_experts: int) -> dict[str, torch.Tensor]:
    """Original per-expert keys -> transformers 5 fused `experts.gate_up_proj` [E, 2I, H] / `down_proj`
    [E, H, I]."""
    out, experts = {}, {}
    for key, value in state.items():
        m = _EXPERT_KEY.match(key)
        if m:
            experts.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = value
        else:
            out[key] = value
    for prefix, parts in experts.items():
        try:
            gate_up = [
                torch.cat([parts[(e, "gate_proj")], parts[(e, "up_proj")]], dim=0) for e in range(num_experts)
            ]
            down = [parts[(e, "down_proj")] for e in range(num_experts)]
        except KeyError as e:
            raise ConversionError(
                f"{prefix}: expert weights {e.args[0]} missing; the checkpoint has experts "
                f"{sorted({i for i, _ in parts})} but the config says num_experts={num_experts}"
            ) from None
        extra = sorted({i for i, _ in parts} - set(range(num_experts)))
        if extra:
            raise ConversionError(
                f"{prefix}: checkpoint has experts {extra} beyond num_experts={num_experts}"
            )
        out[f"{prefix}.gate_up_proj"] = torch.stack(gate_up)
        out[f"{prefix}.down_proj"] = torch.stack(down)
    return out


def split_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fused experts -> the original's per-expert keys (inverse of `fuse_experts`)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".mlp.experts.gate_up_proj"):
            prefix = key[: -len(".gate_up_proj")]
            gate, up = value.chunk(2, dim=1)
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = gate[e].contiguous()
                out[f"{prefix}.{e}.up_proj.weight"] = up[e].contiguous()
        elif key.endswith(".mlp.experts.down_proj"):
            prefix = key[: -len(".down_proj")]
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = value[e].contiguous()
        else:
            out[key] = value
    return out


def state_dict_from_pth(
    state: dict[str, torch.Tensor], config, source: str = ".pth"
) -> dict[str, torch.Tensor]:
    """Check an original state dict against `config` and return it in our layout (tied lm_head dropped)."""
    original = state
    state = dict(state)
    if config.tie_word_embeddings and "lm_head.weight" in state:
        lm_head = state.pop("lm_head.weight")
        embed = state.get("model.embed_tokens.weight")
        if embed is not None and not torch.equal(lm_head, embed):
            raise ConversionError(
                f"{source}: lm_head.weight differs from model.embed_tokens.weight but the config ties them; "
                "pass a config with tie_word_embeddings=false"
            )
    if config.use_moe:
        state = fuse_experts(state, config.num_experts)
    shapes = expected_shapes(config)
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    wrong = [
        (k, tuple(state[k].shape), shapes[k])
        for k in shapes
        if k in state and tuple(state[k].shape) != shapes[k]
    ]
    if missing or unexpected or wrong:
        lines = [f"{source} does not match the given config:"]
        lines += [f"  {k}: checkpoint has shape {got}, config expects {want}" for k, got, want in wrong[:10]]
        if missing:
            lines.append(f"  missing keys: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            lines.append(
                f"  unexpected keys: {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}"
            )
        if "model.embed_tokens.weight" in original:
            candidates = _matching_presets(original)
            if candidates:
                lines.append(
                    f"  this checkpoint matches preset(s): {', '.join(candidates)} "
                    f"(try --preset {candidates[0]})"
                )
        if any(_EXPERT_KEY.match(k) for k in unexpected) and not config.use_moe:
            lines.append("  per-expert keys found: this is a MoE checkpoint (try --preset minimind3-moe)")
        raise ConversionError("\n".join(lines))
    return state


def from_pth(
    pth: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str | None = None,
    config: str | os.PathLike | dict | None = None,
    tokenizer: str | os.PathLike | None = None,
    dtype: str | torch.dtype | None = "auto",
    force: bool = False,
    **overrides,
) -> Path:
    """Original `.pth` state dict + preset/config (+ tokenizer folder) -> a complete MiniMind folder.

    `pth` may also be a folder the original's code saved (config.json + safetensors in its layout): its
    config is read from it (q/k norm as its weights have it) and its tokenizer is used unless one is given."""
    check_tokenizer_arg(tokenizer)
    from .hf import build_model, save_folder

    if Path(pth).is_dir():
        raw, config = read_original_folder(pth, preset, config)
        tokenizer = tokenizer if tokenizer is not None else pth
        cfg = resolve_config(preset, config, **overrides)
    else:
        cfg = resolve_config(preset, config, **overrides)
        raw = read_pth(pth)
    state = state_dict_from_pth(raw, cfg, source=str(pth))
    model = build_model("minimind", cfg, state, parse_dtype(dtype) or floating_dtype(state))
    if tokenizer is None:
        logger.warning("from-pth without --tokenizer: the folder will have no tokenizer")
    return save_folder(model, out, force=force, sources=[tokenizer], made_by="from-pth", base_model=pth)


def to_pth(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "float16",
    force: bool = False,
) -> Path:
    """MiniMind (or Qwen3-family) folder -> the original's native state dict
    (fp16 by default, lm_head included)."""
    config, state = read_model_folder(src)
    target = parse_dtype(dtype) or floating_dtype(state)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    state = split_experts(state)
    # Fresh contiguous tensors in the target dtype; the tied pair is saved as one shared storage, as the
    # original.
    converted: dict[int, torch.Tensor] = {}
    result = {}
    for key, value in state.items():
        ident = id(value)
        if ident not in converted:
            converted[ident] = value.detach().to(target).contiguous().clone()
        result[key] = converted[ident]
    with atomic_output_file(out, force=force) as tmp:
        torch.save(result, tmp)
    logger.info("wrote %s (%d tensors, %s)", out, len(result), target)
    return Path(out)
