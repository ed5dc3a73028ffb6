"""Data pipeline: packing (pretrain and SFT), assistant-only labels, collation, no cross-document
attention."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from minimind_hf.configuration_minimind import MiniMindConfig
from minimind_hf.data import load_records
from minimind_hf.data.collate import IGNORE_INDEX, collate_rows
from minimind_hf.data.packing import pack_documents, pack_sequences, pack_token_ids
from minimind_hf.data.pretrain_pipeline import tokenize_texts
from minimind_hf.data.rendering import encode_conversation, render_prompt
from minimind_hf.data.sft_pipeline import tokenize_conversations
from minimind_hf.modeling_minimind import MiniMindForCausalLM


def test_vectorised_packing_equals_reference_packer():
    rng = random.Random(0)
    for _ in range(150):
        docs = [
            [rng.randrange(3, 50) for _ in range(rng.randrange(0, 30))] for _ in range(rng.randrange(1, 8))
        ]
        seq_len, drop_last = rng.randrange(2, 12), rng.random() < 0.3
        ref = list(pack_documents(docs, seq_len, 2, drop_last=drop_last))
        if not ref:
            continue
        got = pack_token_ids(docs, seq_len, 2, drop_last=drop_last)
        assert len(got) == len(ref)
        for i, row in enumerate(ref):
            for key in ("input_ids", "position_ids", "labels"):
                assert got[i][key].tolist() == row[key], (key, docs, seq_len)


def test_pretrain_packing_keeps_every_token_and_splits_long_documents(demo_files, tiny_tokenizer):
    tok = tiny_tokenizer
    ds = load_records("pretrain", demo_files["pretrain"]).select(range(50))
    ids = tokenize_texts(ds, tok)
    docs = ids["ids"]
    packed = pack_token_ids(docs, 64, tok.eos_token_id)
    total = sum(len(d) + 1 for d in docs)
    assert len(packed) == -(-total // 64)  # no padding except in the last row
    flat = packed.input_ids.reshape(-1)[:total]
    expected = np.concatenate([np.asarray(d + [tok.eos_token_id]) for d in docs])
    assert (flat == expected).all()  # nothing dropped, order kept; long documents continue in the next row
    assert any(len(d) + 1 > 64 for d in docs)
    assert (packed.position_ids[:, 0] == 0).all()  # every row starts a (piece of a) document


def test_sft_labels_cover_exactly_the_generated_assistant_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    messages = [
        {"role": "system", "content": "SYSTEMTEXT"},
        {"role": "user", "content": "USERTEXT weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "X"}}}
            ],
        },
        {"role": "tool", "content": "TOOLRESULT sunny"},
        {"role": "assistant", "content": "ANSWERTEXT it is sunny", "reasoning_content": "THINKTEXT"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {}}}]
    enc = encode_conversation(tok, messages, tools)
    labelled = [t for t in enc["labels"] if t != IGNORE_INDEX]
    text = tok.decode(labelled)
    for must in ("get_weather", "<tool_call>", "ANSWERTEXT it is sunny", "THINKTEXT", "<|im_end|>"):
        assert must in text
    for never in ("SYSTEMTEXT", "USERTEXT", "TOOLRESULT", "<|im_start|>"):
        assert never not in text
    assert text.count("<|im_end|>") == 2  # one per assistant turn, incl. the tool-call turn
    # the labels are the ids themselves where set
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(enc["input_ids"], enc["labels"], strict=False))
    # the prompt for RL honours open_thinking
    assert render_prompt(tok, messages[:2], open_thinking=True).endswith("<think>\n")
    assert render_prompt(tok, messages[:2], open_thinking=False).endswith("<think>\n\n</think>\n\n")


def test_sft_truncation_drops_rows_without_labels_and_packing_keeps_conversations_whole(
    demo_files, tiny_tokenizer
):
    tok = tiny_tokenizer
    ds = load_records("sft", demo_files["sft"]).select(range(60))
    full = tokenize_conversations(ds, tok, max_length=10_000)
    assert len(full) == 60
    # cut at the median position of the first assistant label: about half the rows keep no label
    first = sorted(next(i for i, t in enumerate(lab) if t != IGNORE_INDEX) for lab in full["labels"])
    short = tokenize_conversations(ds, tok, max_length=first[30] + 1)
    assert 0 < len(short) < 60
    assert all(any(t != IGNORE_INDEX for t in lab[1:]) for lab in short["labels"])
    packed = pack_sequences(full, 512, tok.pad_token_id)
    # every conversation appears exactly once, whole, starting at position 0
    starts = int((packed.position_ids == 0).sum())
    assert starts == 60
    assert packed.num_label_tokens() == sum(sum(t != IGNORE_INDEX for t in lab[1:]) for lab in full["labels"])
    fill = sum(len(x) for x in full["input_ids"]) / packed.input_ids.size
    assert fill > 0.85
    with pytest.raises(ValueError, match="longer than seq_len"):
        pack_sequences(full, 16, tok.pad_token_id)


def test_collate_right_pads_without_attention_mask():
    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    b = collate_rows(rows, pad_token_id=0)
    assert set(b) == {"input_ids", "labels", "position_ids"}
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert b["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_documents_do_not_attend_to_each_other(attn):
    torch.manual_seed(0)
    model = MiniMindForCausalLM(
        MiniMindConfig.from_preset("tiny", vocab_size=100, attn_implementation=attn)
    ).eval()
    a, b = [3, 4, 5, 6, 7], [9, 10, 11]
    packed = pack_token_ids([a, b], 10, eos_token_id=2)
    batch = collate_rows([packed[0]])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone_a = model(input_ids=torch.tensor([a + [2]])).logits[0]
        alone_b = model(input_ids=torch.tensor([b + [2]])).logits[0]
    torch.testing.assert_close(logits[:6], alone_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[6:10], alone_b, rtol=1e-5, atol=1e-5)
