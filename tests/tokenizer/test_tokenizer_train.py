"""Training, reserved tokens, round trips and save/load of the MiniMind tokenizer."""

from __future__ import annotations

import inspect
import json
import logging

import pytest
from tokenizers import trainers
from transformers import AutoTokenizer

from minimind_hf.tokenizer import (
    DEFAULT_VOCAB_SIZE,
    SPECIAL_TOKENS,
    chat_template,
    load_tokenizer,
    train_tokenizer,
)
from minimind_hf.tokenizer import train as train_module

EXPECTED_RESERVED = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<|audio_start|>",
    "<|audio_end|>", "<|audio_pad|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>",
    "<tts_text_bos_single>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    "<think>", "</think>", "<|buffer1|>", "<|buffer2|>", "<|buffer3|>", "<|buffer4|>", "<|buffer5|>",
    "<|buffer6|>", "<|buffer7|>", "<|buffer8|>", "<|buffer9|>",
]  # fmt: skip

ROUND_TRIP = [
    "人工智能是计算机科学的一个分支。",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces  \n\n\tand tabs",
    "emoji 😀🚀👍❤️ and rare CJK 龘𠀀 ǅ ß",
    'def f(x):\n    return {"a": [x, x ** 2]}  # comment\n',
    "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n嗯\n</think>\n\n好<|im_end|>",
    '<tool_call>\n{"name": "f"}\n</tool_call><|buffer9|><|endoftext|>',
]


def _assert_minimind_tokenizer(tok) -> None:
    assert tok.convert_tokens_to_ids(EXPECTED_RESERVED) == list(range(36))
    decoder = tok.added_tokens_decoder
    for i, text in enumerate(EXPECTED_RESERVED):
        added = decoder[i]
        assert added.content == text
        assert added.special is (i < 21), (i, added)
        assert (added.normalized, added.lstrip, added.rstrip) == (False, False, False)
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 0)
    assert (tok.unk_token, tok.unk_token_id) == ("<|endoftext|>", 0)
    assert tok.add_bos_token is False and tok.add_eos_token is False
    assert tok.model_max_length == 32768
    assert tok.clean_up_tokenization_spaces is False


def test_special_tokens_constant():
    assert list(SPECIAL_TOKENS) == EXPECTED_RESERVED


def test_reserved_tokens_and_flags(tok):
    _assert_minimind_tokenizer(tok)
    assert len(tok) == 600
    assert tok.chat_template == chat_template()


def test_pretokenizer_is_gpt2_bytelevel(tok):
    state = json.loads(tok.backend_tokenizer.to_str())
    assert state["normalizer"] is None
    assert state["pre_tokenizer"] == {
        "type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True,
    }  # fmt: skip
    assert state["decoder"]["type"] == "ByteLevel"
    assert state["model"]["type"] == "BPE"
    # All 256 byte symbols are in the vocab, so nothing is ever unknown.
    assert len(state["model"]["vocab"]) >= 256 + 36


def test_no_bos_eos_added(tok):
    ids = tok("hello")["input_ids"]
    assert 1 not in ids and 2 not in ids
    assert tok.decode(ids) == "hello"


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(tok, text):
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text


def test_reserved_tokens_are_atomic(tok):
    for i, text in enumerate(EXPECTED_RESERVED):
        ids = tok(f"a{text}b")["input_ids"]
        assert ids[1] == i and tok.convert_ids_to_tokens(ids) == ["a", text, "b"]


def test_skip_special_tokens_keeps_think_and_tool_tokens(tok):
    ids = tok("<|im_start|>assistant\n<think>x</think><tool_call>y</tool_call><|buffer3|><|im_end|>")[
        "input_ids"
    ]
    assert (
        tok.decode(ids, skip_special_tokens=True)
        == "assistant\n<think>x</think><tool_call>y</tool_call><|buffer3|>"
    )
    assert tok.decode(tok("<think>x</think>")["input_ids"], skip_special_tokens=True) == "<think>x</think>"
    assert "<|im_end|>" not in tok.decode(ids, skip_special_tokens=True)


def test_chinese_compresses(tok, corpus):
    # Sanity check that merges were learned (not just bytes): a seen sentence needs far fewer tokens than
    # bytes.
    text = corpus[0]
    assert len(tok(text)["input_ids"]) < len(text.encode("utf-8")) / 2


def test_save_and_auto_load(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert (tmp_path / "chat_template.jinja").read_text(encoding="utf-8") == chat_template()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    _assert_minimind_tokenizer(loaded)
    assert loaded.chat_template == tok.chat_template
    assert loaded.get_vocab() == tok.get_vocab()
    for text in ROUND_TRIP:
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    ids = tok("<think>x</think><|im_end|>")["input_ids"]
    assert loaded.decode(ids, skip_special_tokens=True) == "<think>x</think>"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    assert loaded.apply_chat_template(messages, tokenize=False) == tok.apply_chat_template(
        messages, tokenize=False
    )
    # The package helper loads and checks the same folder.
    assert load_tokenizer(tmp_path).get_vocab() == tok.get_vocab()


def test_default_vocab_size_passes_through(monkeypatch, corpus):
    assert DEFAULT_VOCAB_SIZE == 6400
    assert inspect.signature(train_tokenizer).parameters["vocab_size"].default == 6400
    seen = {}
    real = trainers.BpeTrainer

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(train_module.trainers, "BpeTrainer", spy)
    tok = train_tokenizer(corpus[:20], show_progress=False)
    assert seen["vocab_size"] == 6400
    assert seen["initial_alphabet"] and len(seen["initial_alphabet"]) == 256
    assert [t.content for t in seen["special_tokens"]] == EXPECTED_RESERVED
    assert 292 <= len(tok) <= 6400


@pytest.mark.parametrize("bad", [0, 100, 291])
def test_vocab_size_too_small(bad, corpus):
    with pytest.raises(ValueError, match="at least 292"):
        train_tokenizer(corpus[:5], vocab_size=bad, show_progress=False)


def test_minimum_vocab_size_works(corpus):
    assert len(train_tokenizer(corpus[:5], vocab_size=292, show_progress=False)) == 292


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ValueError, match="nope.jsonl"):
        train_tokenizer([str(missing)], vocab_size=300, show_progress=False)
    with pytest.raises(ValueError, match="directory has no .jsonl"):
        train_tokenizer([tmp_path], vocab_size=300, show_progress=False)


@pytest.mark.parametrize("name", ["missing.parquet", "missing.jsonl.gz", "missing_folder/", "notes.csv"])
def test_paths_that_are_not_data_are_errors_never_text(tmp_path, name):
    """These were once trained on as literal text (a 'tokenizer' from the file name, exit 0)."""
    if name == "notes.csv":
        (tmp_path / name).write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=name.rstrip("/")):
        train_tokenizer([str(tmp_path / name)], vocab_size=300, show_progress=False)


def test_reads_every_source_the_trainers_read(tmp_path):
    """Folders, parquet, gzip and demo: sources, through the same readers as load_records."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["parquet text one", "parquet text two"]}), folder / "a.parquet")
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "gzipped text"}) + "\n")
    from minimind_hf.tokenizer.corpus import iter_source_texts

    assert list(iter_source_texts([folder])) == ["parquet text one", "parquet text two", "gzipped text"]
    assert len(list(iter_source_texts(["demo:sft:5"]))) == 5
    tok = train_tokenizer([str(folder), "demo:pretrain:20"], vocab_size=300, show_progress=False)
    assert len(tok) == 300
    with pytest.raises(ValueError, match="no text in"):
        (tmp_path / "empty.jsonl").write_text('{"other": 1}\n', encoding="utf-8")
        train_tokenizer([tmp_path / "empty.jsonl"], vocab_size=300, show_progress=False)


def test_malformed_jsonl_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        train_tokenizer([bad], vocab_size=300, show_progress=False)


def test_file_formats(tmp_path, caplog):
    pre = tmp_path / "pre.jsonl"
    pre.write_text(
        "\n".join(json.dumps({"text": f"预训练文本 pretrain {i}"}, ensure_ascii=False) for i in range(30))
        + "\n\n",
        encoding="utf-8",
    )
    sft = tmp_path / "sft.jsonl"
    conv = {
        "conversations": [
            {"role": "user", "content": "问题 question"},
            {"role": "assistant", "content": "回答 answer", "reasoning_content": "思考 thinking"},
        ]
    }
    sft.write_text(
        (json.dumps(conv, ensure_ascii=False) + "\n") * 20 + json.dumps({"other": 1}) + "\n", encoding="utf-8"
    )
    txt = tmp_path / "plain.txt"
    txt.write_text("第一行 first line\n\nsecond line 第二行\n" * 20, encoding="utf-8")
    js = tmp_path / "list.json"
    js.write_text(
        json.dumps(["json 字符串", {"text": "json record 记录"}] * 20, ensure_ascii=False), encoding="utf-8"
    )

    with caplog.at_level(logging.WARNING):
        tok = train_tokenizer([str(pre), sft, str(txt), js], vocab_size=400, show_progress=False)
    assert "skipped 1 record" in caplog.text and "sft.jsonl" in caplog.text
    vocab = tok.get_vocab()
    # Each format contributed text: a merged token from each is in the vocabulary.
    for word in ("pretrain", "question", "thinking", "first", "record"):
        # Byte-level BPE marks the leading space with "Ġ".
        assert tok.convert_ids_to_tokens(tok(" " + word)["input_ids"]) == ["Ġ" + word], word
    assert len(vocab) <= 400


def test_generator_input(corpus):
    tok = train_tokenizer((line for line in corpus[:50]), vocab_size=350, show_progress=False)
    assert len(tok) == 350
    assert tok.convert_tokens_to_ids("<think>") == 25


def test_split_digits_uses_qwen2_regex_and_keeps_everything_else(corpus):
    """split_digits=True: one piece per digit (Qwen2's pre-tokenizer regex), the same reserved tokens, chat
    template and lossless round trips; the default stays the original's GPT-2 regex."""
    tok = train_tokenizer(corpus, vocab_size=600, show_progress=False, split_digits=True)
    _assert_minimind_tokenizer(tok)
    state = json.loads(tok.backend_tokenizer.to_str())
    split, byte_level = state["pre_tokenizer"]["pretokenizers"]
    assert split["pattern"]["Regex"] == train_module.QWEN2_SPLIT_REGEX and byte_level["use_regex"] is False
    pieces = [tok.decode([i]) for i in tok("答案是 2024。", add_special_tokens=False)["input_ids"]]
    assert [p for p in pieces if p.strip().isdigit()] == ["2", "0", "2", "4"]
    for text in ROUND_TRIP:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.chat_template == chat_template()
