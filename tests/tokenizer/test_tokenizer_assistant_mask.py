"""`return_assistant_tokens_mask` marks exactly the tokens the model generates at inference.

For an assistant turn with reasoning, that is everything after ``<|im_start|>assistant\\n<think>\\n``
(the generation prompt with open_thinking=True) up to and including ``<|im_end|>``; without
reasoning, everything after the empty think block. The ``\\n`` after ``<|im_end|>`` and all
system/user/tool tokens are not masked.
"""

from __future__ import annotations

import pytest

CONVERSATION = [
    {"role": "system", "content": "你是MiniMind。"},
    {"role": "user", "content": "1+1=?"},
    {"role": "assistant", "content": "等于2。", "reasoning_content": "简单的加法。"},
    {"role": "user", "content": "Say hi"},
    {"role": "assistant", "content": "Hi there!"},
    {"role": "user", "content": "北京天气？"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}}
        ],
    },
    {"role": "tool", "content": "晴"},
    {"role": "assistant", "content": "<think>\n天气是晴。\n</think>\n\n北京今天晴。"},
]

# (masked?, decoded text) for each maximal run of equal mask values, written out by hand.
EXPECTED_RUNS = [
    (0, "<|im_start|>system\n你是MiniMind。<|im_end|>\n<|im_start|>user\n1+1=?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"),
    (1, "简单的加法。\n</think>\n\n等于2。<|im_end|>"),
    (0, "\n<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    (1, "Hi there!<|im_end|>"),
    (0, "\n<|im_start|>user\n北京天气？<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    (1, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call><|im_end|>'),
    (0, "\n<|im_start|>user\n<tool_response>\n晴\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"),
    (1, "天气是晴。\n</think>\n\n北京今天晴。<|im_end|>"),
    (0, "\n"),
]  # fmt: skip


def _runs(tok, ids, mask):
    runs, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            runs.append((mask[start], tok.decode(ids[start:i])))
            start = i
    return runs


def _masked(tok, messages, **kwargs):
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **kwargs
    )
    return out["input_ids"], out["assistant_masks"]


def test_mask_runs(tok):
    ids, mask = _masked(tok, CONVERSATION)
    assert len(mask) == len(ids)
    assert _runs(tok, ids, mask) == EXPECTED_RUNS
    # Each masked run ends with <|im_end|>, immediately followed by an unmasked "\n".
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for i in range(len(ids) - 1):
        if mask[i] and not mask[i + 1]:
            assert ids[i] == eos and tok.decode([ids[i + 1]]) == "\n"


def test_masked_text_is_what_generation_continues(tok):
    # Prompt (generation prompt) + masked continuation == the full rendering of the turn.
    for thinking, turn in [
        (True, {"role": "assistant", "content": "答", "reasoning_content": "想"}),
        (False, {"role": "assistant", "content": "答"}),
    ]:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": "问"}],
            tokenize=False,
            add_generation_prompt=True,
            open_thinking=thinking,
        )
        full = tok.apply_chat_template([{"role": "user", "content": "问"}, turn], tokenize=False)
        ids, mask = _masked(tok, [{"role": "user", "content": "问"}, turn])
        generated = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
        assert prompt + generated + "\n" == full


@pytest.mark.parametrize("return_tensors", [None, "pt"])
def test_mask_batched(tok, return_tensors):
    convs = [CONVERSATION[:3], CONVERSATION[:5]]
    out = tok.apply_chat_template(
        convs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
        padding=True, return_tensors=return_tensors,
    )  # fmt: skip
    ids, masks = out["input_ids"], out["assistant_masks"]
    first = [int(x) for x, m in zip(ids[0], masks[0], strict=True) if m]
    assert tok.decode(first) == "简单的加法。\n</think>\n\n等于2。<|im_end|>"
    second = [int(x) for x, m in zip(ids[1], masks[1], strict=True) if m]
    assert tok.decode(second) == "简单的加法。\n</think>\n\n等于2。<|im_end|>Hi there!<|im_end|>"


def test_no_mask_on_generation_prompt(tok):
    ids, mask = _masked(tok, CONVERSATION[:2], add_generation_prompt=True, open_thinking=True)
    assert not any(mask)
