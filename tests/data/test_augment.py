"""The original MiniMind's SFT/DPO augmentation (`minimind_hf.data.augment`): a system prompt added to a share
of conversations, and the empty think block dropped from a share. The reference for the dropped block is the
original's own rule: the rendered text with every ``<think>\\n\\n</think>\\n\\n`` removed."""

from __future__ import annotations

import json

import pytest

from minimind_hf.data import demo_corpus, load_records
from minimind_hf.data.augment import ORIGINAL_SYSTEM_PROMPTS, augment_records, supports_drop_empty_think
from minimind_hf.data.collate import IGNORE_INDEX
from minimind_hf.data.rendering import encode_conversation

EMPTY = "<think>\n\n</think>\n\n"
CONVERSATION = [
    {"role": "user", "content": "1+1?"},
    {"role": "assistant", "content": "2"},
    {"role": "user", "content": "why?"},
    {"role": "assistant", "content": "counting", "reasoning_content": "one and one"},
    {"role": "user", "content": "and 2+2?"},
    {"role": "assistant", "content": "4"},
]


def test_drop_empty_think_renders_as_the_original_removes_it(tiny_tokenizer):
    tok = tiny_tokenizer
    assert supports_drop_empty_think(tok)
    kept = tok.apply_chat_template(CONVERSATION, tokenize=False)
    dropped = tok.apply_chat_template(CONVERSATION, tokenize=False, drop_empty_think=True)
    assert kept.count(EMPTY) == 2 and dropped == kept.replace(EMPTY, "")  # the reasoning turn keeps its block
    prompt = tok.apply_chat_template(
        CONVERSATION[:1], tokenize=False, add_generation_prompt=True, drop_empty_think=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")


def test_dropping_the_block_trains_the_same_tokens(tiny_tokenizer):
    """The block is context outside the generation markers: the labelled text is the same either way."""
    tok = tiny_tokenizer
    texts = []
    for extra in ({}, {"drop_empty_think": True}):
        enc = encode_conversation(tok, CONVERSATION, **extra)
        texts.append(tok.decode([t for t in enc["labels"] if t != IGNORE_INDEX]))
    assert texts[0] == texts[1] and "counting" in texts[0] and "one and one" in texts[0]


def _sft_records(tmp_path, n=200):
    rows = demo_corpus.sft_conversations(n)
    rows[0] = {
        "conversations": [{"role": "system", "content": "own"}]
        + [m for m in rows[0]["conversations"] if m["role"] != "system"]
    }
    rows += demo_corpus.tool_conversations(5)
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return load_records("sft", str(path))


def test_augment_records_draws_the_shares_from_the_seed(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    records = _sft_records(tmp_path)
    out = augment_records(
        records, kind="sft", add_system_ratio=0.2, empty_think_ratio=0.2, seed=5, tokenizer=tok
    )
    added = [
        i for i in range(len(records)) if len(out[i]["conversations"]) > len(records[i]["conversations"])
    ]
    assert 20 <= len(added) <= 60  # about 0.2 of 205
    for i in added:
        first = out[i]["conversations"][0]
        assert first["role"] == "system" and first["content"] in ORIGINAL_SYSTEM_PROMPTS
        assert out[i]["conversations"][1:] == records[i]["conversations"]
    assert 0 not in added and not [
        i for i in added if records[i]["tools"]
    ]  # own system turn / tool data kept
    dropped = sum(k["drop_empty_think"] for k in out["chat_template_kwargs"])
    assert 130 <= dropped <= 195  # about 0.8
    again = augment_records(
        records, kind="sft", add_system_ratio=0.2, empty_think_ratio=0.2, seed=5, tokenizer=tok
    )
    assert again["conversations"] == out["conversations"]  # reproducible
    assert augment_records(records, kind="sft") is records  # off: untouched


def test_native_sft_rows_follow_the_augmentation(tmp_path, tiny_tokenizer_dir):
    from minimind_hf.native.sft import SFTConfig, build_sft

    data = tmp_path / "sft.jsonl"
    rows = demo_corpus.sft_conversations(12)
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = SFTConfig(data=[str(data)], tokenizer=str(tiny_tokenizer_dir), preset="tiny", packing=False,
                    max_length=512, add_system_ratio=1.0, empty_think_ratio=0.0,
                    output_dir=str(tmp_path / "out"))  # fmt: skip
    assert cfg.validate() == []
    algo = build_sft(cfg)
    tok = algo.tokenizer
    for row in algo.train_dataset:
        text = tok.decode(row["input_ids"])
        assert text.startswith("<|im_start|>system\n") and EMPTY not in text
    bad = SFTConfig(
        data=[str(data)], tokenizer=str(tiny_tokenizer_dir), add_system_ratio=1.5, empty_think_ratio=-1
    ).validate()
    assert any("add_system_ratio must be" in p for p in bad) and any(
        "empty_think_ratio must be" in p for p in bad
    )


def test_native_dpo_pairs_drop_the_block_in_prompt_and_answers(tmp_path, tiny_tokenizer):
    from minimind_hf.data.dpo_pipeline import encode_pairs

    tok = tiny_tokenizer
    pair = {
        "prompt": [{"role": "user", "content": "1+1?"}],
        "chosen": [{"role": "assistant", "content": "2"}],
        "rejected": [{"role": "assistant", "content": "3"}],
        "chat_template_kwargs": {"drop_empty_think": True},
    }
    enc = encode_pairs(tok, [pair], max_length=1024, max_prompt_length=512)
    prompt, chosen, rejected = enc["prompt_ids"][0], enc["chosen_ids"][0], enc["rejected_ids"][0]
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n") and "<think>" not in tok.decode(prompt)
    assert tok.decode(chosen) == "2<|im_end|>" and tok.decode(rejected) == "3<|im_end|>"
    with pytest.raises(ValueError, match="DPO pairs keep their prompt"):
        augment_records(load_records("dpo", "demo:dpo:4"), kind="dpo", add_system_ratio=0.5)


def test_a_template_without_the_switch_is_refused(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    plain = type(tok).from_pretrained(tok.name_or_path)
    plain.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(ValueError, match="no drop_empty_think switch"):
        augment_records(_sft_records(tmp_path, 4), kind="sft", empty_think_ratio=0.5, tokenizer=plain)
