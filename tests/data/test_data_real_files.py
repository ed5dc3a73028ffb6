"""Every real data file shipped in shared/data loads as its kind, with the documented row counts."""

from __future__ import annotations

import json

import pytest

from minimind_hf.data import load_records

# (kind, path under shared/data, rows per shared/data/README.md)
REAL_FILES = [
    ("pretrain", "pretrain/pretrain_mix.jsonl", 13119),
    ("sft", "sft/sft_mix.jsonl", 5103),  # README lists 999 + 1000 + 1104 + 2000 rows by source
    ("sft", "sft/identity_template.jsonl", 91),
    ("dpo", "dpo/dpo_demo_zh_en.jsonl", 600),
    ("dpo", "dpo/hh_rlhf_harmless_base_test_en.jsonl", 2299),
    ("rl", "math/gsm8k_train_en.jsonl", 7473),
    ("rl", "math/gsm8k_test_en.jsonl", 1319),
    ("rl", "math/cmath_dev_zh.jsonl", 569),
]


def _raw_rows(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize(("kind", "relpath", "rows"), REAL_FILES, ids=[p for _, p, _ in REAL_FILES])
def test_real_file_loads(shared_data, session_cache, kind, relpath, rows):
    path = shared_data / relpath
    raw = _raw_rows(path)
    assert len(raw) == rows, "row count differs from shared/data/README.md"

    ds, report = load_records(kind, path, return_report=True, cache_dir=session_cache)

    assert len(ds) == rows
    assert (report.total, report.kept, report.num_skipped) == (rows, rows, 0)
    first, last = ds[0], ds[rows - 1]
    if kind == "pretrain":
        assert first["text"] == raw[0]["text"] and last["text"] == raw[-1]["text"]
    elif kind == "sft":
        assert [m["content"] for m in first["conversations"]] == [
            m["content"] for m in raw[0]["conversations"]
        ]
        assert first["tools"] is None
    elif kind == "dpo":
        assert first["prompt"] + first["chosen"] == [
            {**m, "reasoning_content": None, "tool_calls": None} for m in raw[0]["chosen"]
        ]
        assert first["rejected"][0]["content"] == raw[0]["rejected"][-1]["content"]
    else:
        assert first["prompt"] == [
            {"role": "user", "content": raw[0]["question"], "reasoning_content": None, "tool_calls": None}
        ]
        assert first["ground_truth"] == raw[0]["answer"] and last["ground_truth"] == raw[-1]["answer"]


def test_real_directories_load_as_one_dataset(shared_data, session_cache):
    dpo = load_records("dpo", shared_data / "dpo", cache_dir=session_cache)
    assert len(dpo) == 600 + 2299
    # dpo_demo has system prompts on some pairs: they stay the first prompt turn
    with_system = [row for row in dpo.select(range(600)) if row["prompt"][0]["role"] == "system"]
    assert len(with_system) == 144
    rl = load_records(
        "rl",
        [shared_data / "math" / "gsm8k_test_en.jsonl", shared_data / "math" / "cmath_dev_zh.jsonl"],
        cache_dir=session_cache,
    )
    assert len(rl) == 1319 + 569


def test_pretrain_file_loads_fast(shared_data, tmp_path):
    import time

    start = time.perf_counter()
    ds = load_records("pretrain", shared_data / "pretrain" / "pretrain_mix.jsonl", cache_dir=tmp_path)
    assert len(ds) == 13119
    assert time.perf_counter() - start < 15  # ~1-2 s on a laptop; generous for loaded CI machines
