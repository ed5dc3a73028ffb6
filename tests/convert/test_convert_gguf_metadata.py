"""to-gguf without llama.cpp: what the file declares (read back with gguf's own reader), the tokenizer
layouts it accepts, and the exports it refuses. The behaviour in llama.cpp is in
test_convert_gguf_llamacpp.py.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from minimind_hf.convert import ConversionError, to_gguf
from minimind_hf.convert.gguf_export import detect_pre_tokenizer

from minimind_hf import MiniMindConfig, MiniMindForCausalLM
from minimind_hf.tokenizer import chat_template

gguf = pytest.importorskip("gguf", reason="the gguf package is needed to write GGUF files (pip install gguf)")


@pytest.fixture(scope="module")
def dense_f16(trained, tmp_path_factory):
    return to_gguf(trained["dense"], tmp_path_factory.mktemp("meta") / "dense-f16.gguf", outtype="f16")


def test_tokenizer_metadata(dense_f16, tokenizer):
    f = gguf.GGUFReader(dense_f16).fields
    assert f["general.architecture"].contents() == "qwen3"
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert f["tokenizer.ggml.bos_token_id"].contents() == 1
    assert f["tokenizer.ggml.eos_token_id"].contents() == 2
    assert f["tokenizer.ggml.padding_token_id"].contents() == 0
    assert f["tokenizer.ggml.unknown_token_id"].contents() == 0
    assert f["tokenizer.ggml.add_bos_token"].contents() is False
    assert f["tokenizer.ggml.add_eos_token"].contents() is False
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    assert tokens == [tokenizer.convert_ids_to_tokens(i) for i in range(len(tokenizer))]
    control, user = gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED
    assert types[0] == types[1] == types[2] == control  # <|endoftext|> <|im_start|> <|im_end|>
    assert tokens[25] == "<think>" and types[25] == user  # special=False: must survive decoding
    assert tokens[27] == "<|buffer1|>" and types[27] == control  # looks special
    assert types[100] == gguf.TokenType.NORMAL
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert f["tokenizer.ggml.merges"].contents() == [" ".join(m) for m in merges]
    template = f["tokenizer.chat_template"].contents()
    assert not re.search(r"\{%-?\s*(end)?generation", template)
    assert template == chat_template(with_generation_markers=False)


def test_tensor_layout(dense_f16, trained, tmp_path):
    tensors = {t.name: t for t in gguf.GGUFReader(dense_f16).tensors}
    assert "output.weight" not in tensors  # tied embeddings
    assert tensors["blk.0.attn_q_norm.weight"].tensor_type.name == "F32"
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"
    moe = {
        t.name: t
        for t in gguf.GGUFReader(to_gguf(trained["moe"], tmp_path / "moe.gguf", outtype="q8_0")).tensors
    }
    assert moe["blk.0.ffn_gate_inp.weight"].tensor_type.name == "F32"  # the router stays f32
    assert moe["blk.0.ffn_gate_exps.weight"].tensor_type.name == "Q8_0"
    assert list(moe["blk.0.ffn_gate_exps.weight"].shape) == [64, 96, 4]  # ggml order: (in, out, experts)
    assert list(moe["blk.0.ffn_down_exps.weight"].shape) == [96, 64, 4]


def test_transformers4_tokenizer_layout(trained, tmp_path):
    """Template inside tokenizer_config.json (no chat_template.jinja), add_bos_token present: both
    honoured."""
    src = tmp_path / "old"
    shutil.copytree(trained["dense"], src)
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["chat_template"] = (src / "chat_template.jinja").read_text()
    config["add_bos_token"] = False
    (src / "tokenizer_config.json").write_text(json.dumps(config))
    (src / "chat_template.jinja").unlink()
    fields = gguf.GGUFReader(to_gguf(src, tmp_path / "old.gguf", outtype="f32")).fields
    assert fields["tokenizer.chat_template"].contents() == chat_template(with_generation_markers=False)
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False


def test_pre_tokenizer_detection():
    assert (
        detect_pre_tokenizer(
            {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}}
        )
        == "gpt-2"
    )
    with pytest.raises(ConversionError, match="--pre-tokenizer"):
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Metaspace"}})
    with pytest.raises(ConversionError, match="--pre-tokenizer"):
        detect_pre_tokenizer({"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "ByteLevel"}})


# ------------------------------------------------------------------------------------------ refusals


def test_gguf_refusals(trained, tmp_path):
    with pytest.raises(ConversionError, match="outtype 'q4_k'"):
        to_gguf(trained["dense"], tmp_path / "x.gguf", outtype="q4_k")
    (tmp_path / "exists.gguf").write_bytes(b"x")
    with pytest.raises(ConversionError, match="already exists"):
        to_gguf(trained["dense"], tmp_path / "exists.gguf")
    assert (tmp_path / "exists.gguf").read_bytes() == b"x"
    # norm_topk_prob=False: llama.cpp would compute another function.
    cfg = MiniMindConfig.from_preset(
        "tiny", vocab_size=1024, use_moe=True, num_experts_per_tok=2, norm_topk_prob=False
    )
    MiniMindForCausalLM(cfg).save_pretrained(tmp_path / "unnormed")
    with pytest.raises(ConversionError, match="renormalises"):
        to_gguf(tmp_path / "unnormed", tmp_path / "u.gguf", tokenizer=trained["dense"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.gguf", "unnormed"]
