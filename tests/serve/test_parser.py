"""The incremental output parser: reasoning / content / tool calls, whatever the chunking."""

from __future__ import annotations

import json
import random

import pytest

from minimind_hf.serve.parser import OutputParser, parse_output

REASONING_TEXT = "Let me think.\nStep 1 < step 2.\n</think>\n\nThe answer is <b>42</b>."
TOOL_TEXT = (
    'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "巴黎"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>'
)


def run_chunks(text: str, sizes: list[int], **kwargs) -> tuple[list, OutputParser]:
    parser = OutputParser(**kwargs)
    deltas, pos = [], 0
    for size in sizes:
        deltas += parser.feed(text[pos : pos + size])
        pos += size
    deltas += parser.feed(text[pos:]) + parser.finish()
    return deltas, parser


def collect(deltas) -> dict:
    return {
        "reasoning": "".join(d.text for d in deltas if d.kind == "reasoning"),
        "content": "".join(d.text for d in deltas if d.kind == "content"),
        "calls": [
            (d.tool_call.name, json.loads(d.tool_call.arguments)) for d in deltas if d.kind == "tool_call"
        ],
    }


def test_reasoning_split_like_the_chat_template():
    out = parse_output(REASONING_TEXT, reasoning=True)
    assert out["reasoning_content"] == "Let me think.\nStep 1 < step 2."
    assert out["content"] == "The answer is <b>42</b>."
    assert out["tool_calls"] == []


def test_tool_calls_parsed_in_openai_shape():
    out = parse_output(TOOL_TEXT, parse_tool_calls=True)
    assert out["content"] == "Checking both."
    calls = out["tool_calls"]
    assert [c.index for c in calls] == [0, 1]
    assert calls[0].to_openai() == {
        "id": calls[0].id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "巴黎"}'},
    }
    assert all(c.id.startswith("call_") and len(c.id) > 10 for c in calls)
    assert calls[0].id != calls[1].id


def test_tool_call_text_stays_content_without_tools():
    out = parse_output(TOOL_TEXT, parse_tool_calls=False)
    assert out["tool_calls"] == []
    assert out["content"] == TOOL_TEXT.rstrip("\n")


@pytest.mark.parametrize("body", ['{"name": "f", "arguments": ', "not json", '{"arguments": {}}'])
def test_malformed_tool_call_is_returned_as_text(body):
    text = f"<tool_call>\n{body}\n</tool_call>"
    out = parse_output(text, parse_tool_calls=True)
    assert out["tool_calls"] == []
    assert out["content"] == text


def test_unterminated_tool_call_is_returned_as_text():
    out = parse_output('<tool_call>\n{"name": "f"', parse_tool_calls=True)
    assert out["tool_calls"] == [] and out["content"] == '<tool_call>\n{"name": "f"'


@pytest.mark.parametrize(
    "text,kwargs",
    [
        (REASONING_TEXT, {"reasoning": True}),
        (TOOL_TEXT, {"parse_tool_calls": True}),
        ("a<thinking>b</think", {}),
        ("x\n\n<th", {"parse_tool_calls": True}),
    ],
)
def test_any_chunking_gives_the_same_result(text, kwargs):
    whole = collect(run_chunks(text, [], **kwargs)[0])
    rng = random.Random(0)
    for _ in range(200):
        sizes = [rng.randint(0, 4) for _ in range(len(text))]
        assert collect(run_chunks(text, sizes, **kwargs)[0]) == whole
    one_by_one = collect(run_chunks(text, [1] * len(text), **kwargs)[0])
    assert one_by_one == whole


def test_tag_prefix_is_held_only_until_disambiguated():
    p = OutputParser(parse_tool_calls=True)
    assert [d.text for d in p.feed("a < b")] == ["a < b"]  # '<' followed by space: not a tag
    assert [d.text for d in p.feed(" <to")] == [" "]  # '<to' could still become <tool_call>
    assert [d.text for d in p.feed("y>")] == ["<toy>"]  # '<toy' cannot: released at once
    p2 = OutputParser(reasoning=True)
    assert [d.text for d in p2.feed("abc</th")] == ["abc"]
    assert [(d.kind, d.text) for d in p2.feed("ink>\n\nok")] == [("content", "ok")]


def test_newlines_are_held_then_released_or_dropped():
    p = OutputParser()
    assert [d.text for d in p.feed("line one\n")] == ["line one"]
    assert [d.text for d in p.feed("line two")] == ["\nline two"]
    assert [d.text for d in p.feed("\n\n")] == []
    assert p.finish() == []  # trailing newlines before <|im_end|> are dropped, like the template


def test_content_that_opens_a_think_block_switches_to_reasoning():
    out = parse_output("<think>\nhmm\n</think>\n\nyes")
    assert out["reasoning_content"] == "hmm" and out["content"] == "yes"
