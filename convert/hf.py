"""MiniMind folder <-> plain transformers folder (`to-qwen3` / `from-qwen3`).

MiniMind is a Qwen3 with a few switches, and its state-dict keys are already transformers' keys, so the
conversion is a config translation plus a strict reload of the same tensors:

| MiniMind config                  | transformers class                        |
|----------------------------------|-------------------------------------------|
| dense, q/k norm (minimind3)      | `Qwen3ForCausalLM`                        |
| MoE, q/k norm (minimind3-moe)    | `Qwen3MoeForCausalLM` (fused experts)     |
| dense, no q/k norm (minimind2)   | `LlamaForCausalLM`                        |
| MoE, no q/k norm                 | `MixtralForCausalLM` (needs norm_topk_prob) |

YaRN (`rope_parameters`, attention_factor 1.0) is carried over as is. The result loads with
`AutoModelForCausalLM.from_pretrained(out)` (no `trust_remote_code`) and is what `vllm serve out` takes.
Training-only fields without a transformers equivalent (MiniMind's residual `dropout`, the forward-identical
`router_top1_gradient`) are dropped with a warning when they would matter; the MoE aux loss of transformers'
classes averages over layers where MiniMind sums (inference is identical).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .folders import (
    ConversionError,
    atomic_output_dir,
    check_tokenizer_arg,
    floating_dtype,
    mark_assistant_tokens,
    model_type_of,
    parse_dtype,
    read_config_json,
    read_model_folder,
    write_tokenizer,
)

logger = logging.getLogger(__name__)

_COMMON = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "tie_word_embeddings",
    "attention_bias",
    "attention_dropout",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


def target_model_type(config) -> str:
    """Which transformers model computes exactly what this MiniMindConfig describes."""
    if config.use_moe:
        return "qwen3_moe" if config.use_qk_norm else "mixtral"
    return "qwen3" if config.use_qk_norm else "llama"


def reference_config(config):
    """The transformers config (Qwen3 / Qwen3-MoE / Llama / Mixtral) equivalent to a MiniMindConfig."""
    from transformers import LlamaConfig, MixtralConfig, Qwen3Config, Qwen3MoeConfig

    common = {k: getattr(config, k) for k in _COMMON}
    common["rope_parameters"] = dict(config.rope_parameters)
    if config.dropout:
        logger.warning(
            "MiniMind's residual dropout (%s) has no transformers equivalent; dropped", config.dropout
        )
    kind = target_model_type(config)
    if kind == "qwen3":
        return Qwen3Config(intermediate_size=config.intermediate_size, **common)
    if kind == "llama":
        return LlamaConfig(intermediate_size=config.intermediate_size, mlp_bias=False, **common)
    if kind == "qwen3_moe":
        return Qwen3MoeConfig(
            intermediate_size=config.intermediate_size,
            moe_intermediate_size=config.moe_intermediate_size,
            num_experts=config.num_experts,
            num_experts_per_tok=config.num_experts_per_tok,
            norm_topk_prob=config.norm_topk_prob,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            router_aux_loss_coef=config.router_aux_loss_coef,
            output_router_logits=config.output_router_logits,
            **common,
        )
    # MoE without q/k norm: Mixtral (softmax router, top-k, always renormalised).
    if not config.norm_topk_prob:
        raise ConversionError(
            "a MoE model without q/k norm maps to MixtralForCausalLM, which always renormalises the top-k "
            "router weights; this model has norm_topk_prob=False, so no transformers class computes it"
        )
    return MixtralConfig(
        intermediate_size=config.moe_intermediate_size,
        num_local_experts=config.num_experts,
        num_experts_per_tok=config.num_experts_per_tok,
        router_aux_loss_coef=config.router_aux_loss_coef,
        output_router_logits=config.output_router_logits,
        sliding_window=None,
        **common,
    )


def minimind_config_from_hf(raw: dict, source: str = "config.json"):
    """MiniMindConfig from a transformers Qwen3 / Qwen3-MoE / Llama / Mixtral `config.json` dict."""
    from transformers import CONFIG_MAPPING

    from minimind_hf.configuration_minimind import MINIMIND_YARN, MiniMindConfig

    model_type = raw.get("model_type")
    if model_type not in ("qwen3", "qwen3_moe", "llama", "mixtral"):
        raise ConversionError(
            f"{source}: model_type {model_type!r} is not qwen3, qwen3_moe, llama or mixtral"
        )
    hf = CONFIG_MAPPING[model_type].from_dict(raw)  # normalises legacy rope_theta / rope_scaling
    problems = []
    if getattr(hf, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act is {hf.hidden_act!r}, MiniMind uses silu")
    if getattr(hf, "use_sliding_window", False) or (
        model_type == "mixtral" and getattr(hf, "sliding_window", None)
    ):
        problems.append("sliding-window attention is not supported")
    if getattr(hf, "mlp_bias", False):
        problems.append("mlp_bias=True is not supported")
    if model_type == "qwen3_moe":
        if hf.mlp_only_layers or hf.decoder_sparse_step != 1:
            problems.append(
                "dense layers inside a MoE model (mlp_only_layers / decoder_sparse_step) are not supported"
            )
    if problems:
        raise ConversionError(
            f"{source}: cannot express this {model_type} model as MiniMind: " + "; ".join(problems)
        )

    fields = {k: getattr(hf, k) for k in _COMMON if getattr(hf, k, None) is not None}
    fields["head_dim"] = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    rope = dict(hf.rope_parameters or {"rope_type": "default", "rope_theta": getattr(hf, "rope_theta", 1e4)})
    fields["rope_parameters"] = rope
    fields["inference_rope_scaling"] = rope.get("rope_type") == "yarn" and all(
        float(rope.get(k, -1)) == float(v) for k, v in MINIMIND_YARN.items() if k != "rope_type"
    )
    fields["use_qk_norm"] = model_type in ("qwen3", "qwen3_moe")
    if model_type == "qwen3_moe":
        fields.update(
            use_moe=True,
            num_experts=hf.num_experts,
            num_experts_per_tok=hf.num_experts_per_tok,
            moe_intermediate_size=hf.moe_intermediate_size,
            intermediate_size=hf.intermediate_size,
            norm_topk_prob=hf.norm_topk_prob,
            router_aux_loss_coef=hf.router_aux_loss_coef,
        )
    elif model_type == "mixtral":
        fields.update(
            use_moe=True,
            num_experts=hf.num_local_experts,
            num_experts_per_tok=hf.num_experts_per_tok,
            moe_intermediate_size=hf.intermediate_size,
            intermediate_size=hf.intermediate_size,
            norm_topk_prob=True,
            router_aux_loss_coef=hf.router_aux_loss_coef,
        )
    else:
        fields["intermediate_size"] = hf.intermediate_size
    return MiniMindConfig(**fields)


def _model_class(model_type: str):
    from transformers import LlamaForCausalLM, MixtralForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM

    from minimind_hf import MiniMindForCausalLM

    return {
        "qwen3": Qwen3ForCausalLM,
        "qwen3_moe": Qwen3MoeForCausalLM,
        "llama": LlamaForCausalLM,
        "mixtral": MixtralForCausalLM,
        "minimind": MiniMindForCausalLM,
    }[model_type]


def build_model(model_type: str, config, state: dict[str, torch.Tensor], dtype: torch.dtype):
    """Instantiate `model_type` with `config` (no random init) and load `state` strictly, in `dtype`."""
    from transformers.initialization import no_init_weights

    cls = _model_class(model_type)
    with no_init_weights():
        model = cls(config)
    model.to(dtype)
    state = dict(state)
    tied = getattr(config, "tie_word_embeddings", True)
    if tied:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConversionError(
            f"weights do not fit {cls.__name__}: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    if tied:
        model.tie_weights()
    return model.eval()


def _copy_generation_config(src: Path | None, model) -> None:
    from transformers import GenerationConfig

    if src is not None and (Path(src) / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(os.fspath(src))


def add_legacy_config_fields(path: Path) -> None:
    """Also write the config fields transformers 4.x reads (what the original MiniMind pins, 4.57, and what
    many vLLM installs carry): 4.x ignores transformers 5's ``rope_parameters`` (``rope_theta`` fell back to
    10000, logits off by 0.2) and reads Qwen3-MoE's expert count as ``num_experts`` (5.x:
    ``num_local_experts``; 4.x then built 128 experts). transformers 5 reads the same folder unchanged: it
    prefers ``rope_parameters`` and maps the legacy names onto it."""
    config = json.loads(path.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if config.get("model_type") == "qwen3_moe" and "num_local_experts" in config:
        config["num_experts"] = config["num_local_experts"]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_folder(
    model,
    out: str | os.PathLike,
    *,
    force: bool,
    sources: list,
    generation_source=None,
    made_by: str = "convert",
    base_model: str | os.PathLike | None = None,
) -> Path:
    """Write a complete model folder atomically: config, safetensors, generation_config, tokenizer, model card
    (``made_by``: the convert command, ``base_model``: what it was converted from)."""
    from minimind_hf.model_card import write_model_card

    check_tokenizer_arg(sources[0] if sources else None)
    _copy_generation_config(generation_source, model)
    with atomic_output_dir(out, force=force) as tmp:
        model.save_pretrained(tmp)
        write_tokenizer(tmp, sources)
        own_code = getattr(model.config, "model_type", "") == "minimind"
        if own_code:
            mark_assistant_tokens(tmp)
        else:
            add_legacy_config_fields(tmp / "config.json")
        source = os.fspath(base_model) if base_model is not None else None
        write_model_card(
            tmp, stage=made_by, backend="convert", base_model=source, load_from=out, own_code=own_code
        )
    logger.info("wrote %s (%s)", out, type(model).__name__)
    return Path(out)


def to_qwen3(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "auto",
    tokenizer: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """MiniMind folder -> plain transformers folder (Qwen3 / Qwen3-MoE / Llama / Mixtral, see module doc)."""
    check_tokenizer_arg(tokenizer)
    kind = model_type_of(src)
    if kind != "minimind":
        raise ConversionError(
            f"{src} is already a plain transformers model (model_type {kind!r}); nothing to do"
        )
    config, state = read_model_folder(src)
    target = target_model_type(config)
    model = build_model(target, reference_config(config), state, parse_dtype(dtype) or floating_dtype(state))
    return save_folder(
        model,
        out,
        force=force,
        sources=[tokenizer, src],
        generation_source=src,
        made_by="to-qwen3",
        base_model=src,
    )


def from_qwen3(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "auto",
    tokenizer: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Plain transformers Qwen3 / Qwen3-MoE / Llama / Mixtral folder -> MiniMind folder
    (with its model code)."""
    check_tokenizer_arg(tokenizer)
    kind = model_type_of(src)
    if kind == "minimind":
        if "use_qk_norm" not in read_config_json(src):
            raise ConversionError(
                f"{src} is a folder in the original MiniMind's format: convert it with "
                f"`minimind-hf convert from-pth {src} OUT` (it reads the original's config and weight layout)"
            )
        raise ConversionError(f"{src} is already a MiniMind folder; nothing to do")
    config, state = read_model_folder(src)
    raw = read_config_json(src)
    if raw.get("architectures") and not str(raw["architectures"][0]).endswith("ForCausalLM"):
        logger.warning("%s: architectures %s; converting the causal-LM weights", src, raw["architectures"])
    model = build_model("minimind", config, state, parse_dtype(dtype) or floating_dtype(state))
    return save_folder(
        model,
        out,
        force=force,
        sources=[tokenizer, src],
        generation_source=src,
        made_by="from-qwen3",
        base_model=src,
    )
