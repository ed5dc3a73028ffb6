"""to-qwen3 / from-qwen3: the exported folder is a plain transformers model computing the same logits.

The reference is transformers' own class loaded from the exported folder *without* trust_remote_code
(Qwen3ForCausalLM, Qwen3MoeForCausalLM, LlamaForCausalLM, MixtralForCausalLM), fp32, max abs diff < 1e-4.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from convert_helpers import load_minimind, max_abs_diff
from minimind_hf.convert import ConversionError, from_qwen3, to_qwen3
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

from minimind_hf import MiniMindConfig, MiniMindForCausalLM

TOL = 1e-4
EXPECTED_CLASS = {"dense": "Qwen3ForCausalLM", "moe": "Qwen3MoeForCausalLM", "noqk": "LlamaForCausalLM"}


def _ids(vocab: int, n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, vocab, (2, n), generator=torch.Generator().manual_seed(seed))


def _plain_load(folder):
    """What a user without minimind_hf (or vLLM) does: no trust_remote_code, no model code in the folder."""
    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32).eval()


@pytest.mark.parametrize("kind", ["dense", "moe", "noqk"])
def test_to_qwen3_and_back(kind, trained, tmp_path):
    src = trained[kind]
    out = to_qwen3(src, tmp_path / "hf")
    files = set(os.listdir(out))
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } <= files, files
    assert not any(f.endswith(".py") for f in files), "a plain transformers folder must not need model code"
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == [EXPECTED_CLASS[kind]]

    ours = load_minimind(src)
    theirs = _plain_load(out)
    assert type(theirs).__name__ == EXPECTED_CLASS[kind]
    ids = _ids(ours.config.vocab_size)
    with torch.no_grad():
        diff = max_abs_diff(ours(ids).logits, theirs(ids).logits)
    assert diff < TOL, f"{kind}: max abs logit diff {diff:.2e}"
    # The tokenizer (with its chat template) travels along and loads with AutoTokenizer.
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    ) == AutoTokenizer.from_pretrained(src).apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )

    back = from_qwen3(out, tmp_path / "back")
    assert (back / "modeling_minimind.py").is_file()
    a, b = load_file(src / "model.safetensors"), load_file(back / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg_a, cfg_b = MiniMindConfig.from_pretrained(src), MiniMindConfig.from_pretrained(back)
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "use_qk_norm",
        "use_moe",
        "num_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "rms_norm_eps",
        "rope_parameters",
        "vocab_size",
        "tie_word_embeddings",
    ):
        assert getattr(cfg_a, field) == getattr(cfg_b, field), field


def test_yarn_is_carried_over(trained, tmp_path):
    """MiniMind's YaRN (attention_factor 1.0, not transformers' default 1.277) survives both directions."""
    cfg = MiniMindConfig.from_pretrained(trained["dense"])
    cfg.inference_rope_scaling = True
    cfg.rope_parameters = None
    cfg = MiniMindConfig(
        **{k: v for k, v in cfg.to_dict().items() if k in MiniMindConfig.__dataclass_fields__}
    )
    assert cfg.rope_parameters["rope_type"] == "yarn" and cfg.rope_parameters["attention_factor"] == 1.0
    model = MiniMindForCausalLM.from_pretrained(trained["dense"], config=cfg).eval()
    model.save_pretrained(tmp_path / "yarn")
    out = to_qwen3(tmp_path / "yarn", tmp_path / "hf")
    rope = json.loads((out / "config.json").read_text())["rope_parameters"]
    assert rope["rope_type"] == "yarn" and rope["factor"] == 16 and rope["attention_factor"] == 1.0
    assert rope["original_max_position_embeddings"] == 2048
    theirs = _plain_load(out)
    ids = _ids(cfg.vocab_size, n=64)
    with torch.no_grad():
        assert max_abs_diff(model(ids).logits, theirs(ids).logits) < TOL
    back = MiniMindConfig.from_pretrained(from_qwen3(out, tmp_path / "back"))
    assert back.inference_rope_scaling and back.rope_parameters == cfg.rope_parameters


def test_moe_without_qk_norm_goes_to_mixtral(tmp_path):
    cfg = MiniMindConfig.from_preset(
        "tiny",
        vocab_size=300,
        use_qk_norm=False,
        use_moe=True,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=64,
    )
    torch.manual_seed(0)
    model = MiniMindForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path / "mm")
    out = to_qwen3(tmp_path / "mm", tmp_path / "hf")
    theirs = _plain_load(out)
    assert type(theirs).__name__ == "MixtralForCausalLM"
    ids = _ids(300)
    with torch.no_grad():
        assert max_abs_diff(model(ids).logits, theirs(ids).logits) < TOL


def test_from_qwen3_on_a_transformers_model(tmp_path):
    """A Qwen3 folder that transformers itself wrote (not through our exporter) imports exactly."""
    torch.manual_seed(0)
    ref = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=300,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            tie_word_embeddings=True,
            rope_theta=10000.0,
        )
    ).eval()
    ref.save_pretrained(tmp_path / "qwen3")
    out = from_qwen3(tmp_path / "qwen3", tmp_path / "mm", dtype="float32")
    ours = load_minimind(out)
    assert ours.config.rope_parameters["rope_theta"] == 10000.0
    ids = _ids(300)
    with torch.no_grad():
        assert max_abs_diff(ours(ids).logits, ref(ids).logits) < TOL


def test_dtype_option(trained, tmp_path):
    out = to_qwen3(trained["dense"], tmp_path / "bf16", dtype="bfloat16")
    weights = load_file(out / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}


def test_refuses_to_overwrite_and_force_replaces(trained, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(ConversionError, match="already exists.*--force"):
        to_qwen3(trained["dense"], target)
    assert (target / "keep.txt").is_file()
    to_qwen3(trained["dense"], target, force=True)
    assert not (target / "keep.txt").exists() and (target / "model.safetensors").is_file()
    # An existing *empty* folder is fine without --force.
    (tmp_path / "empty").mkdir()
    to_qwen3(trained["dense"], tmp_path / "empty")


def test_failure_leaves_no_partial_output(trained, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        to_qwen3(trained["dense"], tmp_path / "out")
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_clear_errors(trained, tmp_path):
    with pytest.raises(ConversionError, match="no such folder"):
        to_qwen3(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "readme.txt").write_text("hi")
    with pytest.raises(ConversionError, match="not a model folder: no config.json"):
        to_qwen3(tmp_path / "notamodel", tmp_path / "out")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConversionError, match="'bert' is not a MiniMind or Qwen3-family"):
        to_qwen3(tmp_path / "bert", tmp_path / "out")
    with pytest.raises(ConversionError, match="--tokenizer .*: no tokenizer.json"):
        to_qwen3(trained["dense"], tmp_path / "out", tokenizer=tmp_path / "notamodel")
    with pytest.raises(ConversionError, match="already a MiniMind folder"):
        from_qwen3(trained["dense"], tmp_path / "out")
    qwen = to_qwen3(trained["dense"], tmp_path / "q")
    with pytest.raises(ConversionError, match="already a plain transformers model"):
        to_qwen3(qwen, tmp_path / "out")
    assert not (tmp_path / "out").exists()
