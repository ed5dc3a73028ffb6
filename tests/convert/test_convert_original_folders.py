"""Folders saved by the original MiniMind's own code (issue 14 B) load exactly, MoE experts fused on load,
never with weights silently re-initialised.

The folders are written by this test from a re-statement of the original's format: its config.json fields
(``flash_attn``, a top-level ``rope_theta``, no ``use_qk_norm`` / ``rope_parameters`` /
``router_top1_gradient``) and its weight layout (one module per expert, ``lm_head.weight`` present). The
reference logits come from transformers' own Qwen3 / Llama / Qwen3-MoE classes on the same weights (via
`to_qwen3` of an equivalent folder in our format), not from our model code.
"""

from __future__ import annotations

import json

import pytest
import torch
from convert_helpers import max_abs_diff
from minimind_hf.convert import ConversionError, from_pth, from_qwen3, to_qwen3
from safetensors import safe_open
from safetensors.torch import save_file
from test_convert_pth import original_state_dict
from transformers import AutoModelForCausalLM

from minimind_hf import MiniMindConfig, MiniMindForCausalLM

CASES = {
    "minimind3": {},
    "minimind2_no_qk_norm": {"use_qk_norm": False, "rms_norm_eps": 1e-5},
    "moe_top1": {"use_moe": True, "num_experts": 4, "num_experts_per_tok": 1, "moe_intermediate_size": 96},
    "moe_top2": {"use_moe": True, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 96},
}


def original_config(cfg: MiniMindConfig) -> dict:
    """config.json as the original's MiniMindConfig writes it (its __init__ fields, plus
    PretrainedConfig's)."""
    return {
        "architectures": ["MiniMindForCausalLM"], "model_type": "minimind", "dropout": 0.0,
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers, "use_moe": cfg.use_moe,
        "vocab_size": cfg.vocab_size, "bos_token_id": 1, "eos_token_id": 2, "flash_attn": True,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim, "hidden_act": "silu", "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": 1e6, "tie_word_embeddings": True, "inference_rope_scaling": False, "rope_scaling": None,
        "num_experts": cfg.num_experts, "num_experts_per_tok": cfg.num_experts_per_tok,
        "moe_intermediate_size": cfg.moe_intermediate_size, "norm_topk_prob": True,
        "router_aux_loss_coef": 5e-4, "transformers_version": "5.2.0",
    }  # fmt: skip


@pytest.fixture(scope="module", params=list(CASES))
def folders(request, tokenizer_dir, tokenizer, tmp_path_factory):
    """(case, the original-format folder, the transformers reference model) for one case."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    cfg = MiniMindConfig.from_preset("tiny", vocab_size=len(tokenizer), **CASES[name])
    model = MiniMindForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1, so a missing q/k norm or a re-initialised one shows
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    original = root / "original"
    original.mkdir()
    state = {k: v.float().contiguous() for k, v in original_state_dict(model).items()}
    save_file(state, original / "model.safetensors", metadata={"format": "pt"})
    (original / "config.json").write_text(json.dumps(original_config(cfg), indent=2), encoding="utf-8")
    tokenizer.save_pretrained(original)
    ours = root / "ours"
    model.half().float().save_pretrained(ours)  # the original's weights went through fp16 above
    tokenizer.save_pretrained(ours)
    reference = AutoModelForCausalLM.from_pretrained(
        to_qwen3(ours, root / "qwen3"), dtype=torch.float32
    ).eval()
    return name, original, reference


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 24), generator=torch.Generator().manual_seed(1))


def test_original_folders_load_exactly(folders, tmp_path, caplog):
    """Dense, minimind2 (no q/k norm) and per-expert MoE folders load with the original's logits; MoE experts
    are fused on load (nothing re-initialised, no unexpected keys), and a re-save writes our own format."""
    name, original, reference = folders
    with caplog.at_level("WARNING"):
        model = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32).eval()
    assert isinstance(model, MiniMindForCausalLM)
    assert not [r for r in caplog.records if "MISSING" in r.getMessage() or "UNEXPECTED" in r.getMessage()]
    assert model.config.use_qk_norm == (name != "minimind2_no_qk_norm")
    if name.startswith("moe"):
        assert model.config.router_top1_gradient is False
    ids = _ids(model.config.vocab_size)
    with torch.no_grad():
        expected = reference(ids).logits
        assert max_abs_diff(model(ids).logits, expected) < 1e-4
    model.save_pretrained(tmp_path / "resaved")
    with safe_open(tmp_path / "resaved" / "model.safetensors", framework="pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if ".experts.0." in k]  # the fused layout, not the original's
    assert json.loads((tmp_path / "resaved" / "config.json").read_text(encoding="utf-8"))["use_qk_norm"] == (
        name != "minimind2_no_qk_norm"
    )
    again = MiniMindForCausalLM.from_pretrained(tmp_path / "resaved", dtype=torch.float32).eval()
    with torch.no_grad():
        assert max_abs_diff(again(ids).logits, expected) < 1e-4


def test_per_expert_conversion_does_not_outlive_the_load(folders, tmp_path):
    """A model built from a config after an original MoE folder was loaded still saves fused experts."""
    name, original, _ = folders
    if not name.startswith("moe"):
        pytest.skip("MoE only")
    MiniMindForCausalLM.from_pretrained(original)
    fresh = MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", **CASES[name]))
    fresh.save_pretrained(tmp_path / "fresh")
    with safe_open(tmp_path / "fresh" / "model.safetensors", framework="pt") as f:
        assert any(k.endswith("mlp.experts.gate_up_proj") for k in f.keys())


def test_from_pth_converts_an_original_folder_exactly(folders, tmp_path):
    name, original, reference = folders
    with pytest.raises(ConversionError, match="original MiniMind's format.*from-pth"):
        from_qwen3(original, tmp_path / "nope")
    out = from_pth(original, tmp_path / "converted")  # config, layout and tokenizer from the folder
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["use_qk_norm"] == (name != "minimind2_no_qk_norm")
    if name.startswith("moe"):
        assert config["router_top1_gradient"] is False  # the original's training dynamics, said in the log
    model = MiniMindForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert (out / "tokenizer.json").is_file()
    ids = _ids(model.config.vocab_size)
    with torch.no_grad():
        assert max_abs_diff(model(ids).logits, reference(ids).logits) < 1e-4


def test_a_dense_minimind2_config_with_the_default_shared_expert_field_imports(tokenizer, tmp_path):
    """issue 14 E: the dense minimind2 config carries n_shared_experts=1 (an MoE-only field): not a
    refusal."""
    from minimind_hf.convert.pth import config_from_original

    raw = original_config(MiniMindConfig.from_preset("tiny", vocab_size=len(tokenizer)))
    raw.update(n_shared_experts=1, n_routed_experts=4, scoring_func="softmax", use_qk_norm=False)
    assert config_from_original(raw).use_moe is False
    with pytest.raises(ConversionError, match="shared experts"):
        config_from_original({**raw, "use_moe": True})
