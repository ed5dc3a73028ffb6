"""Invalid input: errors name file, line (or row) and field; skip_invalid drops and counts them."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minimind_hf.data import RecordError, load_records

GOOD = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def sft_row(*turns) -> dict:
    return {"conversations": [{"role": r, "content": c} for r, c in turns]}


def raises_at(load_tmp, kind, path, line, field, reason, match=None) -> RecordError:
    with pytest.raises(RecordError, match=match) as info:
        load_tmp(kind, path)
    err = info.value
    assert (err.file, err.line, err.field, err.reason) == (str(path), line, field, reason)
    assert str(err).startswith(f"{path}:{line}: ")
    return err


def test_malformed_json_names_file_and_physical_line(load_tmp, write_jsonl):
    # blank lines are skipped but still counted: the bad record is on physical line 4
    path = write_jsonl("sft_mix.jsonl", [GOOD, "", GOOD, '{"conversations": [}'])
    err = raises_at(load_tmp, "sft", path, 4, None, "malformed_json")
    assert "malformed JSON" in str(err)
    notes = getattr(err, "__notes__", None)  # Python >= 3.11: the traceback says what to do next
    assert notes is None or "skip_invalid=True" in notes[-1]


def test_missing_text_suggests_the_right_kind(load_tmp, write_jsonl):
    path = write_jsonl("pre.jsonl", [{"text": "ok"}, {"content": "no text key"}, GOOD])
    raises_at(load_tmp, "pretrain", path, 2, "text", "missing_field", match="missing field 'text'")
    path = write_jsonl("pre2.jsonl", [GOOD])
    raises_at(load_tmp, "pretrain", path, 1, "text", "missing_field", match="looks like a 'sft' record")


def test_empty_text(load_tmp, write_jsonl):
    path = write_jsonl("pre.jsonl", [{"text": "ok"}, {"text": "  \n"}])
    raises_at(load_tmp, "pretrain", path, 2, "text", "empty_text")


def test_empty_conversation(load_tmp, write_jsonl):
    path = write_jsonl("sft.jsonl", [GOOD, {"conversations": []}])
    raises_at(load_tmp, "sft", path, 2, "conversations", "empty_conversation", match="conversation is empty")


def test_wrong_role_message_format(load_tmp, write_jsonl):
    rows = [GOOD] * 16 + [sft_row(("user", "a"), ("assistant", "b"), ("bot", "c"))]
    path = write_jsonl("sft_mix.jsonl", rows)
    err = raises_at(load_tmp, "sft", path, 17, "conversations[2].role", "unknown_role")
    assert str(err) == (
        f"{path}:17: conversations[2].role: unknown role 'bot' "
        "(expected one of system, user, assistant, tool)"
    )


def test_tool_calls_not_valid_json(load_tmp, write_jsonl):
    bad = {
        "conversations": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": '[{"name": "get_weather",'},
        ]
    }
    path = write_jsonl("sft.jsonl", [GOOD, bad])
    raises_at(
        load_tmp, "sft", path, 2, "conversations[1].tool_calls", "bad_tool_calls", match="not valid JSON"
    )


def test_tool_call_arguments_not_valid_json(load_tmp, write_jsonl):
    bad = {
        "conversations": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": json.dumps([{"name": "get_weather", "arguments": "{city: Paris}"}]),
            },
        ]
    }
    path = write_jsonl("sft.jsonl", [bad])
    raises_at(load_tmp, "sft", path, 1, "conversations[1].tool_calls[0].arguments", "bad_tool_calls")


def test_content_not_a_string(load_tmp, write_jsonl):
    path = write_jsonl(
        "sft.jsonl",
        [{"conversations": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "x"}]}],
    )
    raises_at(
        load_tmp, "sft", path, 1, "conversations[0].content", "wrong_type", match="must be a string, got list"
    )


def test_null_content_only_for_assistant_tool_calls(load_tmp, write_jsonl):
    path = write_jsonl(
        "sft.jsonl",
        [{"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]}],
    )
    raises_at(
        load_tmp, "sft", path, 1, "conversations[1].content", "wrong_type", match="only an assistant turn"
    )


def test_system_only_first(load_tmp, write_jsonl):
    path = write_jsonl("sft.jsonl", [sft_row(("user", "a"), ("system", "b"), ("assistant", "c"))])
    raises_at(load_tmp, "sft", path, 1, "conversations[1].role", "misplaced_system")


def test_sft_needs_an_assistant_turn(load_tmp, write_jsonl):
    path = write_jsonl("sft.jsonl", [sft_row(("system", "s"), ("user", "a"))])
    raises_at(load_tmp, "sft", path, 1, "conversations", "no_assistant_turn")


def test_sft_rejects_rl_prompt_with_a_hint(load_tmp, write_jsonl):
    path = write_jsonl("sft.jsonl", [sft_row(("user", "a"), ("assistant", ""))])
    raises_at(load_tmp, "sft", path, 1, "conversations[1]", "empty_turn", match="kind='rl'")


def test_dpo_prompt_mismatch(load_tmp, write_jsonl):
    pair = {
        "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "bad"}],
    }
    path = write_jsonl("dpo.jsonl", [pair])
    raises_at(
        load_tmp,
        "dpo",
        path,
        1,
        "rejected[0]",
        "prompt_mismatch",
        match="chosen and rejected prompts differ at turn 0",
    )


def test_parquet_bad_row_names_the_row(load_tmp, tmp_path):
    rows = [
        GOOD,
        GOOD,
        GOOD,
        {"conversations": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]},
    ]
    path = tmp_path / "sft.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(RecordError) as info:
        load_tmp("sft", path)
    err = info.value
    assert (err.line, err.unit, err.field, err.reason) == (3, "row", "conversations[1].role", "unknown_role")
    assert str(err).startswith(f"{path}:row 3: conversations[1].role: unknown role 'bot'")


def test_json_array_bad_row_names_the_row(load_tmp, tmp_path):
    path = tmp_path / "pre.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": 3}]), encoding="utf-8")
    with pytest.raises(RecordError, match=r"pre\.json:row 1: text: text must be a string"):
        load_tmp("pretrain", path)


def test_skip_invalid_counts_per_reason_and_keeps_valid_rows(load_tmp, write_jsonl, caplog):
    rows = [
        GOOD,
        "{not json",
        sft_row(("user", "a"), ("bot", "b")),
        sft_row(("user", "a"), ("robot", "b")),
        {"conversations": []},
        "",
        sft_row(("user", "second good"), ("assistant", "yes")),
        {"messages": [{"role": "user", "content": "alias key"}, {"role": "assistant", "content": "ok"}]},
    ]
    path = write_jsonl("mixed.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="minimind_hf.data"):
        ds, report = load_tmp("sft", path, skip_invalid=True, return_report=True)

    assert len(ds) == 3
    assert [r["conversations"][0]["content"] for r in ds] == ["hi", "second good", "alias key"]
    assert report.total == 7 and report.kept == 3 and report.num_skipped == 4
    assert report.skipped == {"malformed_json": 1, "unknown_role": 2, "empty_conversation": 1}
    assert report.examples[0].startswith(f"{path}:2: malformed JSON")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one summary, not one line per record
    assert "skipped 4 of 7" in warnings[0].getMessage() and "unknown_role=2" in warnings[0].getMessage()

    # a second load_tmp comes from the cache and still knows what was skipped
    ds2, report2 = load_tmp("sft", path, skip_invalid=True, return_report=True)
    assert report2.from_cache and len(ds2) == 3 and report2.skipped == report.skipped


def test_all_invalid_raises_even_with_skip_invalid(load_tmp, write_jsonl):
    path = write_jsonl("pre.jsonl", [GOOD, GOOD])
    with pytest.raises(ValueError, match=r"none of the 2 rows is a valid 'pretrain' record") as info:
        load_tmp("pretrain", path, skip_invalid=True)
    assert "missing_field=2" in str(info.value)


def test_empty_file_raises(load_tmp, write_jsonl):
    path = write_jsonl("empty.jsonl", ["", "  "])
    with pytest.raises(ValueError, match="no records found"):
        load_tmp("pretrain", path)


@pytest.mark.parametrize("name", ["./nope.jsonl", "nope.jsonl", "missing/dir/data.parquet", "x.json"])
def test_missing_local_path_is_not_looked_up_on_the_hub(name, monkeypatch, tmp_path):
    import datasets

    monkeypatch.chdir(tmp_path)

    def no_hub(*args, **kwargs):
        raise AssertionError("must not call the hub")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        load_records("sft", name)


def test_unknown_kind_and_unsupported_file(load_tmp, tmp_path):
    with pytest.raises(ValueError, match="expected one of pretrain, sft, dpo, rl"):
        load_tmp("chat", tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_tmp("sft", tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="directory has no"):
        load_tmp("sft", tmp_path / "empty")
