"""MiniMind (or Qwen3-family) folder -> one GGUF file that stock llama.cpp loads (`to-gguf`).

Written with the `gguf` package (metadata keys and tensor names from `gguf.constants` /
`gguf.get_tensor_name_map`, never typed by hand), following what was measured on this machine
(`shared/reference/gguf.md`):

- architecture `qwen3` (dense, q/k norm), `qwen3moe` (MoE, q/k norm) or `llama` (no q/k norm; q/k rows
  permuted from the NeoX rotary layout to llama.cpp's interleaved one, as llama.cpp's own converter does);
- tied embeddings: no `output.weight`; 1-D norms and the MoE router (`ffn_gate_inp`) stay f32; MoE experts
  stacked as `ffn_{gate,up,down}_exps` (E, out, in);
- file types f32, f16, bf16, q8_0 (q8_0 rows must be a multiple of 32; other tensors fall back to f16);
- YaRN: scaling type/factor/original context, and `rope.scaling.attn_factor` chosen so that llama.cpp's
  built-in YaRN magnitude correction (1 + 0.1 ln factor) times it equals the model's `attention_factor`
  (MiniMind: 1.0);
- the tokenizer inside: `gpt2` BPE model, pre-tokenizer `gpt-2` (MiniMind's ByteLevel regex is GPT-2's),
  every token with its type (normal / control / user-defined), merges, bos/eos/pad/unk ids,
  `add_bos_token=false` / `add_eos_token=false` written explicitly, and the chat template without the
  transformers-only `{% generation %}` tags.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from .folders import ConversionError, atomic_output_file, read_model_folder

logger = logging.getLogger(__name__)

OUTTYPES = ("f32", "f16", "bf16", "q8_0")


def strip_generation_tags(template: str) -> str:
    """`{% generation %}` is a transformers-only Jinja extension; llama.cpp's Jinja engine and
    llama-cpp-python's formatter do not know it. Removing it does not change what renders."""
    from minimind_hf.tokenizer.template import strip_generation_markers

    return strip_generation_markers(template)


def gguf_arch(config) -> str:
    """GGUF architecture name for a MiniMindConfig (from `gguf.MODEL_ARCH_NAMES`)."""
    import gguf

    arch = gguf.MODEL_ARCH.LLAMA
    if config.use_qk_norm:
        arch = gguf.MODEL_ARCH.QWEN3MOE if config.use_moe else gguf.MODEL_ARCH.QWEN3
    return gguf.MODEL_ARCH_NAMES[arch]


def _arch_enum(name: str):
    import gguf

    return next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == name)


# ------------------------------------------------------------------------------------------- tokenizer


def _read_chat_template(folder: Path) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        template = json.loads(config_path.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if isinstance(template, str):
            return template
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    return None


def _is_qwen2_split(pre: dict) -> bool:
    from minimind_hf.tokenizer.train import QWEN2_SPLIT_REGEX

    steps = pre.get("pretokenizers") or []
    return (
        pre.get("type") == "Sequence"
        and len(steps) == 2
        and steps[0].get("type") == "Split"
        and (steps[0].get("pattern") or {}).get("Regex") == QWEN2_SPLIT_REGEX
        and steps[0].get("behavior") == "Isolated"
        and not steps[0].get("invert")
        and steps[1].get("type") == "ByteLevel"
        and not steps[1].get("use_regex")
        and not steps[1].get("add_prefix_space")
    )


def detect_pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp pre-tokenizer name for a tokenizers.json, or a ConversionError saying what to pass."""
    normalizer = tokenizer_json.get("normalizer")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if (
        normalizer is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space")
    ):
        return "gpt-2"  # ByteLevel(use_regex=True) is exactly GPT-2's split regex
    if normalizer is None and _is_qwen2_split(pre):
        return "qwen2"  # train_tokenizer(split_digits=True): Qwen2's regex, one digit per piece
    raise ConversionError(
        f"the tokenizer's pre-tokenizer ({pre.get('type')}, normalizer "
        f"{normalizer and normalizer.get('type')}) is not MiniMind's ByteLevel/GPT-2 one; pass "
        "pre_tokenizer= (--pre-tokenizer NAME, a name llama.cpp knows, e.g. qwen2) if you know which "
        "llama.cpp pre-tokenizer matches it"
    )


def _looks_special(token: str) -> bool:
    # llama.cpp's convert_hf_to_gguf.py `does_token_look_special`.
    return token in ("<pad>", "<mask>") or (token.startswith("<|") and token.endswith("|>"))


def tokenizer_metadata(folder: Path, n_vocab: int, pre_tokenizer: str | None = None) -> dict:
    """Everything llama.cpp needs to tokenise like transformers, read from a tokenizer folder."""
    import gguf

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ConversionError(
            f"{folder}: no tokenizer.json; a GGUF must carry the tokenizer. Pass tokenizer=DIR "
            "(--tokenizer DIR)"
        )
    tj = json.loads(path.read_text(encoding="utf-8"))
    if tj.get("model", {}).get("type") != "BPE":
        raise ConversionError(
            f"{path}: tokenizer model {tj.get('model', {}).get('type')!r}; only byte-level BPE is supported"
        )
    decoder = (tj.get("decoder") or {}).get("type")
    if decoder != "ByteLevel":
        raise ConversionError(f"{path}: decoder {decoder!r} is not ByteLevel")
    pre = pre_tokenizer or detect_pre_tokenizer(tj)

    vocab: dict[str, int] = tj["model"]["vocab"]
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    size = max([*vocab.values(), *added.keys()]) + 1
    if size > n_vocab:
        raise ConversionError(
            f"{path}: the tokenizer has {size} tokens but the model's vocab_size is {n_vocab}"
        )
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    for token, i in vocab.items():
        tokens[i], types[i] = token, gguf.TokenType.NORMAL
    for i, t in added.items():
        tokens[i] = t["content"]
        special = t.get("special", False) or _looks_special(t["content"])
        types[i] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED

    special_vocab = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    if not special_vocab.merges:
        raise ConversionError(f"{path}: no BPE merges found")
    template = _read_chat_template(folder)
    if template is None:
        from minimind_hf.tokenizer import chat_template

        logger.warning("%s has no chat template; embedding MiniMind's", folder)
        template = chat_template(with_generation_markers=False)
    special_vocab.chat_template = strip_generation_tags(template)
    # transformers 5 no longer saves add_bos_token; llama.cpp would then guess. MiniMind adds neither.
    tok_config = {}
    if (folder / "tokenizer_config.json").is_file():
        tok_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    special_vocab.add_special_token["bos"] = bool(tok_config.get("add_bos_token", False))
    special_vocab.add_special_token["eos"] = bool(tok_config.get("add_eos_token", False))
    return {"tokens": tokens, "types": types, "pre": pre, "special_vocab": special_vocab}


# --------------------------------------------------------------------------------------------- tensors


def _permute_for_llama(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """NeoX (rotate_half) row order -> llama.cpp's interleaved rotary order
    (convert_hf_to_gguf's `permute`)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(config, state: dict[str, torch.Tensor], arch_name: str):
    """Yield (gguf name, fp32 numpy array, is_norm_or_router) for every tensor, in a stable order."""
    import gguf

    name_map = gguf.get_tensor_name_map(_arch_enum(arch_name), config.num_hidden_layers)
    items = []
    for key, value in state.items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue
        value = value.detach().float()
        if arch_name == "llama" and key.endswith("self_attn.q_proj.weight"):
            value = _permute_for_llama(value, config.num_attention_heads)
        elif arch_name == "llama" and key.endswith("self_attn.k_proj.weight"):
            value = _permute_for_llama(value, config.num_key_value_heads)
        if key.endswith("mlp.experts.gate_up_proj"):  # [E, 2I, H] -> gate [E, I, H] + up [E, I, H]
            gate, up = value.chunk(2, dim=1)
            base = key[: -len("gate_up_proj")]
            items += [(base + "gate_proj.weight", gate), (base + "up_proj.weight", up)]
        elif key.endswith("mlp.experts.down_proj"):
            items.append((key + ".weight", value))
        else:
            items.append((key, value))
    for key, value in items:
        found = name_map.get_type_and_name(key, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ConversionError(f"no GGUF tensor name for {key} in architecture {arch_name}")
        kind, name = found
        keep_f32 = value.ndim == 1 or kind == gguf.MODEL_TENSOR.FFN_GATE_INP
        yield name, value.contiguous().numpy(), keep_f32


def _encode(array: np.ndarray, outtype: str, keep_f32: bool):
    """(data, raw_dtype) for GGUFWriter.add_tensor."""
    import gguf

    q = gguf.GGMLQuantizationType
    if keep_f32 or outtype == "f32":
        return array.astype(np.float32), q.F32
    if outtype == "f16":
        return array.astype(np.float16), q.F16
    if outtype == "bf16":
        return gguf.quants.quantize(array.astype(np.float32), q.BF16), q.BF16
    if array.shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0] == 0:
        return gguf.quants.quantize(array.astype(np.float32), q.Q8_0), q.Q8_0
    logger.info("q8_0: row length %d is not a multiple of 32; keeping f16", array.shape[-1])
    return array.astype(np.float16), q.F16


# ------------------------------------------------------------------------------------------------ main


def _add_hparams(writer, config, arch_name: str) -> None:
    import gguf

    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    # llama.cpp's `llama` architecture sizes its experts by feed_forward_length (Mixtral style); qwen3moe
    # reads expert_feed_forward_length.
    moe_llama = config.use_moe and arch_name == "llama"
    writer.add_feed_forward_length(config.moe_intermediate_size if moe_llama else config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = dict(config.rope_parameters)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    rope_type = rope.get("rope_type", "default")
    if rope_type == "yarn":
        factor = float(rope["factor"])
        if rope.get("mscale") or rope.get("mscale_all_dim"):
            raise ConversionError("YaRN with mscale / mscale_all_dim is not supported for GGUF export")
        attention_factor = rope.get("attention_factor")
        if attention_factor is None:
            attention_factor = 0.1 * math.log(factor) + 1.0  # transformers' default
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        writer.add_rope_scaling_yarn_beta_fast(float(rope.get("beta_fast", 32.0)))
        writer.add_rope_scaling_yarn_beta_slow(float(rope.get("beta_slow", 1.0)))
        # llama.cpp multiplies cos/sin by attn_factor * (1 + 0.1 ln factor) (ggml rope_yarn).
        writer.add_rope_scaling_attn_factors(float(attention_factor) / (1.0 + 0.1 * math.log(factor)))
    elif rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type != "default":
        raise ConversionError(
            f"rope_type {rope_type!r} cannot be expressed in GGUF here (default, linear, yarn)"
        )
    if config.use_moe:
        if not config.norm_topk_prob:
            raise ConversionError(
                "llama.cpp always renormalises the chosen experts' weights; this model has "
                "norm_topk_prob=False, so llama.cpp would compute a different function"
            )
        writer.add_expert_count(config.num_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
        writer.add_expert_feed_forward_length(config.moe_intermediate_size)


def to_gguf(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    outtype: str = "f16",
    tokenizer: str | os.PathLike | None = None,
    pre_tokenizer: str | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Write `src` (a MiniMind or Qwen3-family folder) as a single GGUF file at `out`."""
    import gguf

    if outtype not in OUTTYPES:
        raise ConversionError(
            f"outtype {outtype!r}: use one of {', '.join(OUTTYPES)} (K-quants need rows of 256)"
        )
    src = Path(src)
    config, state = read_model_folder(src)
    if config.attention_bias:
        raise ConversionError("attention biases are not supported by the qwen3/llama GGUF export")
    arch_name = gguf_arch(config)
    tok = tokenizer_metadata(Path(tokenizer) if tokenizer else src, config.vocab_size, pre_tokenizer)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[outtype]

    with atomic_output_file(out, force=force) as tmp:
        writer = gguf.GGUFWriter(tmp, arch_name)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or src.absolute().name)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hparams(writer, config, arch_name)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(tok["pre"])
        writer.add_token_list(tok["tokens"])
        writer.add_token_types(tok["types"])
        tok["special_vocab"].add_to_gguf(writer, quiet=True)
        for tensor_name, array, keep_f32 in gguf_tensors(config, state, arch_name):
            data, raw_dtype = _encode(array, outtype, keep_f32)
            writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    logger.info("wrote %s (%s, %s)", out, arch_name, outtype)
    return Path(out)
