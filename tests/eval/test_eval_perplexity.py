"""Perplexity and bits-per-byte: exact token accounting, the sliding window against brute force, and the
uniform model's bits-per-byte = log2(V) * tokens / bytes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from minimind_hf.eval.perplexity import document_ids, perplexity, read_texts, rolling_windows

from minimind_hf import cli

TEXTS = [
    "人工智能是计算机科学的一个分支，它试图理解智能的本质。The quick brown fox jumps over the lazy dog.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "MiniMind: 26M parameters, trained from scratch on 2 CPU cores? 不，用 GPU 更快。",
    "",  # nothing to score
]


@pytest.mark.parametrize("length", [1, 2, 3, 7, 8, 9, 50, 101])
@pytest.mark.parametrize(("max_length", "stride"), [(2, 1), (8, 1), (8, 4), (8, 7), (16, 5)])
def test_windows_score_every_token_once_with_enough_context(length, max_length, stride):
    scored = []
    for begin, end, first in rolling_windows(length, max_length, stride):
        assert 0 <= begin < first < end <= length and end - begin <= max_length
        for target in range(first, end):
            context = target - begin
            assert context >= min(
                target, max_length - stride
            )  # full history, or at least max_length - stride
        scored += range(first, end)
    assert scored == list(range(1, length))


def main(argv: list[str]) -> int:
    """`minimind-hf eval ARGV...`."""
    return cli.main(["eval", *argv])


def test_bad_window_settings_are_refused():
    with pytest.raises(ValueError, match="stride must be in"):
        list(rolling_windows(10, 8, 8))
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        list(rolling_windows(10, 1, 1))


def test_uniform_model_bits_per_byte_is_log2_vocab_per_byte(uniform_model, tokenizer):
    vocab = uniform_model.config.vocab_size
    result = perplexity(uniform_model, tokenizer, TEXTS, max_length=16, stride=5, progress=False)
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    n_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    assert (result.documents, result.tokens, result.bytes) == (3, n_tokens, n_bytes)
    assert result.bits_per_byte == pytest.approx(math.log2(vocab) * n_tokens / n_bytes, rel=1e-6)
    assert result.perplexity == pytest.approx(vocab, rel=1e-5)
    assert result.bits_per_token == pytest.approx(math.log2(vocab), rel=1e-6)


def test_one_window_equals_the_models_own_loss(tiny_model, tokenizer):
    text = TEXTS[0]
    ids = document_ids(tokenizer, text, tokenizer.bos_token_id)
    result = perplexity(tiny_model, tokenizer, [text], max_length=len(ids), stride=1, progress=False)
    with torch.no_grad():
        loss = tiny_model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert result.tokens == len(ids) - 1
    assert result.nll == pytest.approx(loss * (len(ids) - 1), rel=1e-5)


def test_sliding_window_equals_brute_force(tiny_model, tokenizer):
    """Each token's log-probability given exactly the context its window gives it, computed one by one."""
    max_length, stride = 8, 3
    texts = TEXTS[:2]
    expected = 0.0
    for text in texts:
        ids = document_ids(tokenizer, text, tokenizer.bos_token_id)
        assert len(ids) > max_length + stride  # several windows
        for begin, end, first in rolling_windows(len(ids), max_length, stride):
            for target in range(first, end):
                with torch.no_grad():
                    logits = tiny_model(torch.tensor([ids[begin:target]])).logits[0, -1]
                expected -= torch.log_softmax(logits.float(), -1)[ids[target]].item()
    for batch_size in (1, 5):  # batching pads windows on the right: must not change anything
        result = perplexity(
            tiny_model,
            tokenizer,
            texts,
            max_length=max_length,
            stride=stride,
            batch_size=batch_size,
            progress=False,
        )
        assert result.nll == pytest.approx(expected, rel=1e-5)


def test_more_context_never_hurts_the_accounting(tiny_model, tokenizer):
    short = perplexity(tiny_model, tokenizer, TEXTS, max_length=4, stride=3, progress=False)
    long = perplexity(tiny_model, tokenizer, TEXTS, max_length=64, stride=32, progress=False)
    assert (short.tokens, short.bytes) == (long.tokens, long.bytes)
    assert short.nll != pytest.approx(long.nll)  # different contexts, same tokens


def test_prefix_and_eos_options(tiny_model, tokenizer):
    base = perplexity(tiny_model, tokenizer, TEXTS, max_length=32, stride=16, progress=False)
    with_eos = perplexity(
        tiny_model, tokenizer, TEXTS, max_length=32, stride=16, score_eos=True, progress=False
    )
    assert (
        with_eos.tokens == base.tokens + 3 and with_eos.bytes == base.bytes
    )  # one EOS per non-empty document
    assert with_eos.nll > base.nll
    eos_prefix = perplexity(
        tiny_model, tokenizer, TEXTS, max_length=32, stride=16, prefix="eos", progress=False
    )
    assert eos_prefix.tokens == base.tokens and eos_prefix.nll != pytest.approx(base.nll)
    assert document_ids(tokenizer, "你好", tokenizer.eos_token_id)[0] == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="prefix must be"):
        perplexity(tiny_model, tokenizer, TEXTS, prefix="pad", progress=False)


def test_read_texts(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("第一行\n第二行\n", encoding="utf-8")
    assert read_texts(txt) == ["第一行\n第二行\n"]  # a .txt file is one document
    rows = tmp_path / "a.jsonl"
    rows.write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in TEXTS[:3]) + "\n", encoding="utf-8"
    )
    assert read_texts(rows) == TEXTS[:3] and read_texts(rows, limit=2) == TEXTS[:2]
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
        read_texts(tmp_path / "nope.jsonl")


def test_cli_ppl_writes_json(model_dir, tmp_path, capsys):
    data = tmp_path / "docs.jsonl"
    data.write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in TEXTS[:3]) + "\n", encoding="utf-8"
    )
    out = tmp_path / "ppl.json"
    assert (
        main(
            [
                "ppl",
                str(model_dir),
                "--data",
                str(data),
                "--max-length",
                "16",
                "--stride",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["documents"] == 3 and result["bytes"] == sum(len(t.encode()) for t in TEXTS[:3])
    assert result["bits_per_byte"] == pytest.approx(result["nll"] / math.log(2) / result["bytes"])
    assert "bits/byte" in capsys.readouterr().out
    assert main(["ppl", str(model_dir), "--data", str(tmp_path / "missing.jsonl")]) == 2
