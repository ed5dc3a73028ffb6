"""Input formats: parquet and JSON arrays equal jsonl; tools/tool_calls JSON strings; hub names;
streaming; caching; and that a loaded dataset saved to parquet loads again unchanged."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minimind_hf.data import RECORD_FEATURES, RecordError, load_records

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
OTHER_TOOLS = [
    {
        "name": "search",
        "description": "Web search",  # bare function spec, also accepted
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
]

# MiniMind's form: tools and tool_calls are JSON *strings* inside the messages.
MINIMIND_TOOL_ROW = {
    "conversations": [
        {"role": "system", "content": "You are helpful.", "tools": json.dumps(TOOLS)},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Need the weather tool.",
            "tool_calls": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}}]),
        },
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "21 °C in Paris.", "reasoning_content": "Tool says 21."},
    ]
}
# OpenAI form with string arguments and a second tool list on another row.
OPENAI_TOOL_ROW = {
    "messages": [
        {"role": "user", "content": "Find MiniMind"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"query": "MiniMind"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "github.com/jingyaogong/minimind"},
        {"role": "assistant", "content": "Found it."},
    ],
    "tools": json.dumps(OTHER_TOOLS),
}
PLAIN_ROW = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
SFT_ROWS = [MINIMIND_TOOL_ROW, OPENAI_TOOL_ROW, PLAIN_ROW]


def test_tools_and_tool_calls_normalise_to_lists(load_tmp, write_jsonl):
    ds = load_tmp("sft", write_jsonl("agent.jsonl", SFT_ROWS))
    assert ds.features == RECORD_FEATURES["sft"]
    first, second, third = ds[0], ds[1], ds[2]

    assert first["tools"] == TOOLS  # pulled from the system message, parsed, kept as given
    assert all(
        set(m) == {"role", "content", "reasoning_content", "tool_calls"} for m in first["conversations"]
    )
    call = first["conversations"][2]
    assert call["content"] == "" and call["reasoning_content"] == "Need the weather tool."
    assert call["tool_calls"] == [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert first["conversations"][0]["tool_calls"] is None

    assert second["tools"] == OTHER_TOOLS  # top-level tools; bare spec kept bare
    assert second["conversations"][1]["content"] == ""  # null content of a tool-calling turn
    assert second["conversations"][1]["tool_calls"][0]["function"]["arguments"] == {"query": "MiniMind"}
    # arguments of one row do not leak keys into another (they are stored as JSON, not a merged struct)
    assert "city" not in second["conversations"][1]["tool_calls"][0]["function"]["arguments"]

    assert third["tools"] is None and third["conversations"][1]["reasoning_content"] is None


def test_normalised_record_renders_with_a_chat_template(load_tmp, write_jsonl):
    """Values are plain dicts/strings a Jinja chat template can walk (the real template lives elsewhere)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    template = (
        "{% if tools %}<tools>{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n{% endif %}"
        "{% for m in messages %}<{{ m.role }}>"
        "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}"
        '{% for c in m.tool_calls or [] %}<tool_call>{"name": "{{ c.function.name }}", '
        '"arguments": {{ c.function.arguments | tojson }}}</tool_call>{% endfor %}\n{% endfor %}'
    )
    row = load_tmp("sft", write_jsonl("agent.jsonl", SFT_ROWS))[0]
    rendered = render_jinja_template(
        conversations=[row["conversations"]], tools=row["tools"], chat_template=template
    )
    text = rendered[0][0] if isinstance(rendered, tuple) else rendered
    text = text[0] if isinstance(text, list) else text
    assert '"name": "get_weather"' in text
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in text
    assert "<think>Need the weather tool.</think>" in text and "None" not in text


def _write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize(
    ("kind", "rows"),
    [
        ("pretrain", [{"text": "一"}, {"text": "two", "meta": 1}]),
        ("sft", [PLAIN_ROW, PLAIN_ROW]),
        ("rl", [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}]),
        (
            "dpo",
            [
                {
                    "chosen": PLAIN_ROW["conversations"],
                    "rejected": PLAIN_ROW["conversations"][:1] + [{"role": "assistant", "content": "no"}],
                }
            ],
        ),
    ],
)
def test_parquet_and_json_array_load_like_jsonl(load_tmp, write_jsonl, tmp_path, kind, rows):
    from_jsonl = load_tmp(kind, write_jsonl("data.jsonl", rows))
    from_parquet = load_tmp(kind, _write_parquet(tmp_path / "data.parquet", rows))
    json_path = tmp_path / "data.json"
    json_path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    from_json = load_tmp(kind, json_path)
    assert from_jsonl.to_list() == from_parquet.to_list() == from_json.to_list()
    assert from_jsonl.features == from_parquet.features == from_json.features


def test_tool_rows_survive_parquet(load_tmp, write_jsonl, tmp_path):
    """MiniMind-style string fields in parquet, where missing keys come back as nulls."""
    from_jsonl = load_tmp("sft", write_jsonl("data.jsonl", SFT_ROWS))
    # pyarrow needs one type per column: give every tool_calls/tools the JSON-string form
    rows = json.loads(json.dumps(SFT_ROWS))
    rows[1]["conversations"] = rows[1].pop("messages")
    rows[1]["conversations"][1]["tool_calls"] = json.dumps(rows[1]["conversations"][1]["tool_calls"])
    for row in rows:  # pyarrow takes the columns from the first row
        row.setdefault("tools", None)
    from_parquet = load_tmp("sft", _write_parquet(tmp_path / "data.parquet", rows))
    assert from_parquet.to_list() == from_jsonl.to_list()


def test_jsonl_records_in_a_dot_json_file(load_tmp, tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    assert load_tmp("pretrain", path)["text"] == ["a", "b"]


@pytest.mark.parametrize("kind", ["sft", "dpo", "rl"])
def test_output_loads_again_after_saving_to_parquet(load_tmp, write_jsonl, tmp_path, kind):
    rows = {
        "sft": SFT_ROWS,
        "dpo": [
            {
                "prompt": [{"role": "user", "content": "Q"}],
                "chosen": [{"role": "assistant", "content": "A"}],
                "rejected": [{"role": "assistant", "content": "B"}],
                "tools": TOOLS,
            }
        ],
        "rl": [{"conversations": MINIMIND_TOOL_ROW["conversations"][:2], "gt": "21"}],
    }[kind]
    first = load_tmp(kind, write_jsonl("data.jsonl", rows))
    first.to_parquet(tmp_path / "saved.parquet")
    again = load_tmp(kind, tmp_path / "saved.parquet")
    assert again.to_list() == first.to_list()


def test_directory_and_list_sources(load_tmp, write_jsonl, tmp_path):
    write_jsonl("a.jsonl", [{"text": "a"}])
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.json").write_text(json.dumps([{"text": "b"}]), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.jsonl").write_text('{"text": "hidden"}\n')
    assert load_tmp("pretrain", tmp_path)["text"] == ["a", "b"]
    assert load_tmp("pretrain", [sub / "b.json", tmp_path / "a.jsonl"])["text"] == ["b", "a"]


def test_hub_name_goes_to_load_dataset(load_tmp, monkeypatch):
    calls = []

    def fake_load_dataset(name, split=None, streaming=False, **kwargs):
        calls.append((name, split, streaming))
        return datasets.Dataset.from_list([{"question": "1+1?", "answer": 2}, {"question": "", "answer": 1}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds, report = load_tmp("rl", "openai/gsm8k", split="test", skip_invalid=True, return_report=True)
    assert calls == [("openai/gsm8k", "test", False)]
    assert ds[0]["ground_truth"] == "2" and len(ds) == 1
    assert report.examples == ["openai/gsm8k:row 1: question: question must be a non-empty string"]


def test_streaming_validates_lazily(write_jsonl, tmp_path):
    path = write_jsonl("pre.jsonl", [{"text": "a"}, {"text": "b"}, {"nope": 1}])
    stream = load_records("pretrain", path, streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    it = iter(stream)
    assert next(it) == {"text": "a"} and next(it) == {"text": "b"}
    with pytest.raises(RecordError, match=r"pre\.jsonl:3: text: missing field 'text'"):
        next(it)
    assert [r["text"] for r in load_records("pretrain", path, streaming=True, skip_invalid=True)] == [
        "a",
        "b",
    ]
    with pytest.raises(ValueError, match="streaming=False"):
        load_records("pretrain", path, streaming=True, return_report=True)


def test_cache_is_invalidated_when_the_file_changes(load_tmp, write_jsonl):
    path = write_jsonl("pre.jsonl", [{"text": "a"}])
    assert load_tmp("pretrain", path)["text"] == ["a"]
    write_jsonl("pre.jsonl", [{"text": "a"}, {"text": "b"}])
    ds, report = load_tmp("pretrain", path, return_report=True)
    assert ds["text"] == ["a", "b"] and not report.from_cache
    ds, report = load_tmp("pretrain", path, return_report=True)
    assert report.from_cache and (report.total, report.kept) == (2, 2)


@pytest.mark.parametrize("rows", [[PLAIN_ROW], SFT_ROWS], ids=["no-tools", "tools"])
def test_dataset_operations_work_with_and_without_tools(load_tmp, write_jsonl, tmp_path, rows):
    """pyarrow cannot flatten all-null lists of JSON values; the schema must avoid them."""
    ds = load_tmp("sft", write_jsonl("data.jsonl", rows))
    ds.save_to_disk(tmp_path / "saved")
    assert datasets.load_from_disk(tmp_path / "saved").to_list() == ds.to_list()
    ds.to_parquet(tmp_path / "saved.parquet")
    assert ds.map(lambda row: {"n": len(row["conversations"])})["n"] == [len(r["conversations"]) for r in ds]
    assert len(datasets.concatenate_datasets([ds, ds]).shuffle(seed=0)) == 2 * len(ds)
