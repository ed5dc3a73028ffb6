"""The tool registry: a safe calculator checked against Python's own arithmetic, mock tools, schemas the chat
template renders, and calls that never raise."""

from __future__ import annotations

import json
import random

import pytest

from minimind_hf.tools import TOOLS, get_tools, run_tool_call, tool_schemas


def _random_expression(rng: random.Random, depth: int = 0) -> str:
    if depth > 2 or rng.random() < 0.3:
        return str(rng.randint(0, 99))
    op = rng.choice(["+", "-", "*", "//", "%"])
    right = _random_expression(rng, depth + 1)
    if op in ("//", "%"):
        right = f"({right} + 100)"  # never zero: Python and the tool must agree, not both raise
    return f"({_random_expression(rng, depth + 1)} {op} {right})"


def test_calculator_equals_python_on_random_integer_expressions():
    rng = random.Random(0)
    tools = get_tools(["calculator"])
    for _ in range(300):
        expr = _random_expression(rng)
        assert run_tool_call(tools, "calculator", {"expression": expr}) == str(eval(expr)), expr  # noqa: S307


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("12 * (3 + 4)", "84"),
        ("7 / 2", "3.5"),
        ("2 ** 10", "1024"),
        ("-3 + 5", "2"),
        ("6×7", "42"),
        ("1.5*4", "6"),
    ],
)
def test_calculator_values(expression, expected):
    assert run_tool_call(TOOLS, "calculator", json.dumps({"expression": expression})) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "2 ** 1000",
        "9 ** 9 ** 9",
        "1 / 0",
        "x + 1",
        "(1," + "1+" * 300 + "1)",
        "len('a')",
    ],
)
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression):
    out = run_tool_call(TOOLS, "calculator", {"expression": expression})
    assert out.startswith("error: "), out


def test_bad_calls_become_error_texts_not_exceptions():
    tools = get_tools(["calculator", "unit_convert"])
    assert run_tool_call(tools, "weather", "{}").startswith("error: unknown tool 'weather'")
    assert run_tool_call(tools, "calculator", "{not json").startswith("error: arguments are not JSON")
    assert run_tool_call(tools, "calculator", "[1, 2]") == "error: arguments must be a JSON object"
    assert run_tool_call(tools, "calculator", {}).startswith("error: bad arguments for calculator")
    assert run_tool_call(tools, "unit_convert", {"value": 1, "from_unit": "kg", "to_unit": "m"}).startswith(
        "error:"
    )

    def broken() -> str:
        """Always fails."""
        raise RuntimeError("boom")

    assert run_tool_call({"broken": broken}, "broken", None) == "error: broken failed (RuntimeError)"


def test_mock_tools():
    assert run_tool_call(TOOLS, "unit_convert", {"value": 1.5, "from_unit": "km", "to_unit": "m"}) == "1500"
    assert run_tool_call(TOOLS, "unit_convert", {"value": 100, "from_unit": "C", "to_unit": "F"}) == "212"
    assert run_tool_call(TOOLS, "lookup", {"query": "Capital of France?"}) == "Paris"
    assert run_tool_call(TOOLS, "lookup", {"query": "capital of Mars"}).startswith("error: no entry")
    assert run_tool_call(TOOLS, "current_time", {}) == run_tool_call(TOOLS, "current_time", "")


def test_unknown_tool_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="calculator"):
        get_tools(["calculater"])


def test_schemas_are_what_transformers_reads_and_the_template_renders(tiny_tokenizer):
    from transformers.utils import get_json_schema

    schemas = tool_schemas(TOOLS)
    assert [s["function"]["name"] for s in schemas] == list(TOOLS)
    calc = schemas[list(TOOLS).index("calculator")]
    assert calc == get_json_schema(TOOLS["calculator"])
    assert calc["function"]["parameters"]["required"] == ["expression"]
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tools=schemas, tokenize=False
    )
    assert "<tools>" in text and '"name": "calculator"' in text and '"name": "unit_convert"' in text
