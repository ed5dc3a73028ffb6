"""`validate_record` per kind: accepted forms, normalised output, and field-level errors."""

from __future__ import annotations

import json

import pytest

from minimind_hf.data import RECORD_KINDS, RecordError, validate_record


def msgs(*turns):
    return [{"role": r, "content": c} for r, c in turns]


def norm(*turns):
    return [{"role": r, "content": c, "reasoning_content": None, "tool_calls": None} for r, c in turns]


def error(kind, record) -> RecordError:
    with pytest.raises(RecordError) as info:
        validate_record(kind, record)
    assert info.value.file is None and info.value.line is None  # the loader adds the location
    return info.value


def test_kinds():
    assert RECORD_KINDS == ("pretrain", "sft", "dpo", "rl")
    with pytest.raises(ValueError, match="unknown record kind"):
        validate_record("chat", {})
    assert error("sft", ["not", "an", "object"]).reason == "not_an_object"


def test_pretrain_drops_extra_keys():
    assert validate_record("pretrain", {"text": "abc", "source": "c4"}) == {"text": "abc"}


def test_sft_messages_alias_and_ambiguity():
    out = validate_record("sft", {"messages": msgs(("user", "a"), ("assistant", "b"))})
    assert out == {"conversations": norm(("user", "a"), ("assistant", "b")), "tools": None}
    both = {"messages": msgs(("user", "a"), ("assistant", "b")), "conversations": msgs(("user", "a"))}
    assert error("sft", both).reason == "ambiguous_keys"
    err = error("sft", {"messages": [{"from": "human", "value": "hi"}]})
    assert err.field == "messages[0].from" and "ShareGPT" in err.message


def test_sft_message_rules():
    assert (
        error(
            "sft", {"conversations": msgs(("user", "a"), ("assistant", "b"))[:1] + [{"content": "x"}]}
        ).field
        == "conversations[1].role"
    )
    err = error(
        "sft",
        {
            "conversations": [
                {"role": "user", "content": "a", "reasoning_content": "no"},
                {"role": "assistant", "content": "b"},
            ]
        },
    )
    assert (err.field, err.reason) == ("conversations[0].reasoning_content", "bad_reasoning")
    err = error(
        "sft",
        {
            "conversations": [
                {"role": "user", "content": "a", "tool_calls": [{"name": "f"}]},
                {"role": "assistant", "content": "b"},
            ]
        },
    )
    assert (err.field, err.reason) == ("conversations[0].tool_calls", "bad_tool_calls")
    err = error(
        "sft",
        {
            "conversations": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b", "weight": 0.5},
            ]
        },
    )
    assert (err.field, err.reason) == ("conversations[1].weight", "unknown_key")


def test_tool_forms():
    tool_calls = [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
    for given in (
        [{"name": "f", "arguments": {"x": 1}}],
        [{"name": "f", "arguments": '{"x": 1}'}],
        json.dumps([{"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]),
        {"name": "f", "arguments": {"x": 1}},
    ):
        out = validate_record(
            "sft",
            {"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": given}]},
        )
        assert out["conversations"][1] == {
            "role": "assistant",
            "content": "",
            "reasoning_content": None,
            "tool_calls": tool_calls,
        }
    err = error(
        "sft",
        {
            "conversations": [
                {"role": "system", "content": "s", "tools": '[{"description": "x"}]'},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ]
        },
    )
    assert (err.field, err.reason) == ("conversations[0].tools[0]", "bad_tools")
    tool_a = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    tool_b = {"type": "function", "function": {"name": "f", "description": "different"}}
    err = error(
        "sft",
        {
            "conversations": [
                {"role": "system", "content": "s", "tools": [tool_a]},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
            "tools": [tool_b],
        },
    )
    assert err.reason == "bad_tools" and "defined twice" in err.message
    same = validate_record(
        "sft",
        {
            "conversations": [
                {"role": "system", "content": "s", "tools": [tool_a]},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
            "tools": [tool_a],
        },
    )
    assert same["tools"] == [tool_a]


def test_dpo_implicit_becomes_explicit():
    record = {
        "chosen": msgs(("system", "s"), ("user", "q"), ("assistant", "good")),
        "rejected": msgs(("system", "s"), ("user", "q"), ("assistant", "bad")),
    }
    assert validate_record("dpo", record) == {
        "prompt": norm(("system", "s"), ("user", "q")),
        "chosen": norm(("assistant", "good")),
        "rejected": norm(("assistant", "bad")),
        "tools": None,
    }


def test_dpo_explicit_trl_form():
    record = {
        "prompt": msgs(("user", "q")),
        "chosen": msgs(("assistant", "good")),
        "rejected": msgs(("assistant", "bad")),
    }
    out = validate_record("dpo", record)
    assert out["prompt"] == norm(("user", "q")) and out["rejected"] == norm(("assistant", "bad"))
    err = error("dpo", {**record, "chosen": msgs(("user", "q"), ("assistant", "good"))})
    assert (err.field, err.reason) == ("chosen[0].role", "bad_ending")


@pytest.mark.parametrize(
    ("chosen", "rejected", "field", "reason", "text"),
    [
        (
            msgs(("user", "q"), ("assistant", "a")),
            msgs(("user", "q"), ("assistant", "b"), ("user", "more")),
            "rejected[2].role",
            "bad_ending",
            "must end with an assistant turn",
        ),
        (
            msgs(("user", "q"), ("assistant", "x"), ("user", "q2"), ("assistant", "a")),
            msgs(("user", "q"), ("assistant", "y"), ("user", "q2"), ("assistant", "b")),
            "rejected[1]",
            "prompt_mismatch",
            "differ at turn 1 (different content)",
        ),
        (
            msgs(("user", "q"), ("assistant", "a")),
            msgs(("system", "s"), ("user", "q"), ("assistant", "b")),
            "rejected[0]",
            "prompt_mismatch",
            "differ at turn 0 (role 'user' vs 'system')",
        ),
        (msgs(("assistant", "a")), msgs(("assistant", "b")), "chosen", "missing_prompt", "no prompt"),
    ],
)
def test_dpo_errors(chosen, rejected, field, reason, text):
    err = error("dpo", {"chosen": chosen, "rejected": rejected})
    assert (err.field, err.reason) == (field, reason) and text in err.message


def test_rl_forms():
    # MiniMind RLAIF: the empty last assistant turn is dropped
    out = validate_record("rl", {"conversations": msgs(("user", "q"), ("assistant", ""))})
    assert out == {"prompt": norm(("user", "q")), "ground_truth": None, "tools": None}
    # agent RL: tools on the system message, `gt`
    system = {"role": "system", "content": "s", "tools": json.dumps([{"name": "calc"}])}
    out = validate_record("rl", {"conversations": [system, {"role": "user", "content": "q"}], "gt": 42})
    assert out["ground_truth"] == "42" and out["tools"] == [{"name": "calc"}] and len(out["prompt"]) == 2
    # the original's agent-RL `gt` list: every value the final answer must contain, kept as a JSON array
    from minimind_hf.rewards import ground_truth_values

    out = validate_record("rl", {"conversations": msgs(("user", "q")), "gt": ["28°C", 7.21, ""]})
    assert json.loads(out["ground_truth"]) == ["28°C", "7.21"]
    assert ground_truth_values(out["ground_truth"]) == ["28°C", "7.21"] and ground_truth_values("42") == [
        "42"
    ]
    # question/answer (the math files)
    assert validate_record("rl", {"question": "1+1?", "answer": 2, "grade": 1}) == {
        "prompt": norm(("user", "1+1?")),
        "ground_truth": "2",
        "tools": None,
    }


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        (
            {"conversations": msgs(("user", "q"), ("assistant", "an answer"))},
            "conversations[1]",
            "bad_ending",
        ),
        ({"conversations": msgs(("system", "s"))}, "conversations", "bad_ending"),
        ({"conversations": msgs(("assistant", ""))}, "conversations", "empty_conversation"),
        ({"question": "q"}, "answer", "missing_field"),
        ({"question": "q", "answer": True}, "answer", "wrong_type"),
        ({"conversations": msgs(("user", "q")), "gt": {"a": 1}}, "gt", "wrong_type"),
        ({"conversations": msgs(("user", "q")), "gt": ["a", {"b": 2}]}, "gt[1]", "wrong_type"),
        ({"conversations": msgs(("user", "q")), "gt": "a", "ground_truth": "b"}, None, "ambiguous_keys"),
    ],
)
def test_rl_errors(record, field, reason):
    err = error("rl", record)
    assert (err.field, err.reason) == (field, reason)
