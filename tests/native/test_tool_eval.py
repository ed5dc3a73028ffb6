"""`minimind-hf eval tools`: the metrics on a model that really calls the calculator, and the CLI."""

from __future__ import annotations

import json

import pytest
from _native_helpers import TOOL_CONVERSATION as CONVERSATION
from _native_helpers import TOOL_PROMPT as PROMPT
from _native_helpers import tiny_lm
from _tool_models import memorise
from minimind_hf.eval.tool_calls import builtin_tool_eval_set, evaluate_tool_calls, wilson_interval

from minimind_hf.tools import get_tools, tool_schemas


@pytest.fixture(scope="module")
def tool_model(tiny_tokenizer):
    model = tiny_lm(tiny_tokenizer)
    memorise(model, tiny_tokenizer, CONVERSATION, tool_schemas(get_tools(["calculator"])))
    return model


def test_metrics_count_calls_arguments_by_value_and_answers(tool_model, tiny_tokenizer):
    calc = {"name": "calculator"}
    records = [  # the model answers both the same way: calculator("6*7") -> "The answer is 42."
        {
            "prompt": PROMPT,
            "ground_truth": "42",
            "expected_calls": [{**calc, "arguments": {"expression": "7 * 6"}}],
        },
        {
            "prompt": PROMPT,
            "ground_truth": "13",
            "expected_calls": [{**calc, "arguments": {"expression": "6 + 7"}}],
        },
    ]
    result = evaluate_tool_calls(
        tool_model, tiny_tokenizer, records, get_tools(["calculator"]), max_new_tokens=120
    )
    assert result.n == 2 and result.tool_call_rate == 1.0 and result.well_formed == 1.0
    assert result.right_tool == 1.0
    assert result.argument_match == 0.5  # "6*7" has the value of "7 * 6", not of "6 + 7"
    assert result.accuracy == 0.5 and result.ci95 == pytest.approx(wilson_interval(1, 2))
    assert result.mean_turns == 2.0
    assert "| final-answer accuracy | 50.0%" in result.markdown()


def test_wilson_interval_reference_values():
    # the textbook values (Wilson 1927; e.g. Newcombe 1998, table I: 81/263 -> 0.2553-0.3662)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_builtin_set_is_held_out_arithmetic_with_the_expected_call():
    from minimind_hf.tools import TOOLS, run_tool_call

    rows = builtin_tool_eval_set(30)
    assert len(rows) == 30
    for row in rows:
        (call,) = row["expected_calls"]
        assert run_tool_call(TOOLS, call["name"], call["arguments"]) == row["ground_truth"]


def test_cli_prints_the_table_and_writes_rows(tool_model, tiny_tokenizer, tmp_path, capsys):
    from minimind_hf.cli import main

    tool_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "tools.json"
    argv = ["eval", "tools", str(tmp_path / "m"), "--limit", "4", "--max-new-tokens", "24", "--out", str(out)]
    assert main(argv) == 0
    assert "| tool-call rate |" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["summary"]["n"] == 4 and len(saved["rows"]) == 4
    assert main(["eval", "tools", str(tmp_path / "m"), "--tools", "nope"]) == 2
