"""Tests for the built-in demo corpus (minimind_hf/data/demo_corpus.py). Fast: one default-size corpus
build."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest

from minimind_hf.data import demo_corpus as dc

# Our own copy of the conversion factors: answers are recomputed here, not taken from the generator.
FACTORS = {"m-cm": 100, "kg-g": 1000, "h-min": 60, "min-s": 60, "yuan-jiao": 10}
ZH_CHARS = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # CJK + full-width punctuation
ASCII_PUNCT = re.compile(r"[,.?!;:]")
ANSWER = re.compile(r"(?:答案是 |The answer is )(\d+)[。.]")
EQUATION = re.compile(r"(?<![\d.])(\d+(?: [-+×÷] \d+)+) = (\d+)")
TABLE_ROW = re.compile(r"^\| (\d+(?: [-+×] \d+)+) \| (\d+) \|$", re.M)
BARE_ARITH = re.compile(r"^(\d+) ([-+×]) (\d+) = [?？]$")


@functools.cache
def _calc(expr: str) -> float:
    """Evaluate '23 + 45', '3 × 4 - 2', '300 ÷ 100' with normal precedence (independent of the generator)."""
    assert re.fullmatch(r"\d+(?: [-+×÷] \d+)*", expr), expr
    return eval(
        expr.replace("×", "*").replace("÷", "/"), {"__builtins__": {}}
    )  # digits and operators only (checked above)


def _recompute(p: dc.Problem) -> int:
    if p.family == "convert":
        v, f = p.meta["value"], FACTORS[p.meta["units"]]
        return v * f if p.meta["to_small"] else v
    return int(_calc(" ".join(str(t) for t in p.meta["expr"])))


def _is_zh(text: str) -> bool:
    return bool(ZH_CHARS.search(text))


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _sft_texts(row: dict) -> list[str]:
    return [m.get("reasoning_content", "") + " " + m["content"] for m in row["conversations"]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, list[dict]]:
    paths = dc.write_demo_corpus(tmp_path_factory.mktemp("demo"))
    assert set(paths) == {"pretrain", "sft", "tools", "rl", "dpo", "heldout"}
    for name, p in paths.items():
        assert p.name == f"{name}.jsonl" and p.exists()
    return {name: _read(p) for name, p in paths.items()}


def test_determinism_and_seeds():
    for fn in (dc.pretrain_texts, dc.sft_conversations, dc.rl_prompts, dc.dpo_pairs, dc.heldout_problems):
        assert fn(50) == fn(50)
        assert fn(50, seed=7) == fn(50, seed=7)
        assert fn(50, seed=7) != fn(50, seed=8)
        assert fn(50) != fn(50, seed=99)


@pytest.mark.parametrize("heldout", [False, True])
def test_problem_answers_recomputed_independently(heldout):
    problems = dc.math_problems(1500, seed=5, heldout=heldout)
    assert {p.family for p in problems} == {"add", "sub", "mul", "convert", "word"}
    for p in problems:
        expected = _recompute(p)
        assert p.answer == str(expected) and expected >= 0, p
        nums_in_q = [int(x) for x in re.findall(r"\d+", p.question)]
        if p.family == "convert":
            assert nums_in_q == [p.meta["value"] * (1 if p.meta["to_small"] else FACTORS[p.meta["units"]])], p
        else:
            assert sorted(nums_in_q) == sorted(t for t in p.meta["expr"] if isinstance(t, int)), p
        lhs, rhs = p.equation.rsplit(" = ", 1)
        assert rhs == p.answer and _calc(lhs) == expected, p
        for lhs, rhs in EQUATION.findall(p.explanation()):
            assert _calc(lhs) == int(rhs), p
        assert dc.is_heldout_key(p.key) is heldout


def test_public_rows_match_problems():
    problems = dc.math_problems(300, seed=2, stream="rl")
    for row, p in zip(dc.rl_prompts(300), problems, strict=True):
        assert row == {"conversations": [{"role": "user", "content": p.question}], "gt": str(_recompute(p))}
    problems = dc.math_problems(100, seed=1234, heldout=True, stream="heldout")
    for row, p in zip(dc.heldout_problems(100), problems, strict=True):
        assert (row["question"], row["answer"]) == (p.question, str(_recompute(p)))


def test_every_equation_and_table_row_in_text_is_correct(corpus):
    texts = [r["text"] for r in corpus["pretrain"]] + [t for r in corpus["sft"] for t in _sft_texts(r)]
    n_eq = n_rows = 0
    for text in texts:
        for lhs, rhs in EQUATION.findall(text):
            assert _calc(lhs) == int(rhs), (lhs, rhs, text)
            n_eq += 1
        for lhs, rhs in TABLE_ROW.findall(text):
            assert _calc(lhs) == int(rhs), (lhs, rhs, text)
            n_rows += 1
    assert n_eq > 30_000 and n_rows > 1_000


def test_gt_of_bare_arithmetic_prompts(corpus):
    checked = 0
    for row in corpus["rl"]:
        m = BARE_ARITH.match(row["conversations"][-1]["content"])
        if m:
            a, op, b = int(m[1]), m[2], int(m[3])
            assert row["gt"] == str({"+": a + b, "-": a - b, "×": a * b}[op])
            checked += 1
    for row in corpus["heldout"]:
        m = BARE_ARITH.match(row["question"])
        if m:
            a, op, b = int(m[1]), m[2], int(m[3])
            assert row["answer"] == str({"+": a + b, "-": a - b, "×": a * b}[op])
            checked += 1
    assert checked > 50


def test_sft_answers_are_parseable_and_match_the_worked_equation(corpus):
    n = 0
    for row in corpus["sft"]:
        for m in row["conversations"]:
            found = ANSWER.findall(m["content"])
            if m["role"] != "assistant" or not found:
                continue
            assert len(found) == 1 and m["content"].endswith(("。", "."))
            last_eq = EQUATION.findall(m.get("reasoning_content", "") + " " + m["content"])[-1]
            assert last_eq[1] == found[0] and _calc(last_eq[0]) == int(found[0])
            n += 1
    assert n > 2000


def test_file_formats(corpus):
    assert [len(corpus[k]) for k in ("pretrain", "sft", "rl", "heldout")] == [
        dc.DEFAULT_SIZES[k] for k in ("pretrain", "sft", "rl", "heldout")
    ]
    for row in corpus["pretrain"]:
        assert set(row) == {"text"} and 30 <= len(row["text"]) <= 800
    n_reasoning = n_system = n_multi = 0
    for row in corpus["sft"]:
        conv = row["conversations"]
        assert set(row) == {"conversations"}
        if conv[0]["role"] == "system":
            n_system += 1
            conv = conv[1:]
        assert len(conv) >= 2 and len(conv) % 2 == 0
        n_multi += len(conv) > 2
        for i, m in enumerate(conv):
            assert m["role"] == ("user", "assistant")[i % 2]
            assert isinstance(m["content"], str) and m["content"].strip()
            assert set(m) <= (
                {"role", "content", "reasoning_content"} if m["role"] == "assistant" else {"role", "content"}
            )
            if "reasoning_content" in m:
                n_reasoning += 1
                assert m["reasoning_content"].strip() and ANSWER.fullmatch(m["content"])
    n = len(corpus["sft"])
    assert 0.1 < n_system / n < 0.4 and 0.1 < n_multi / n < 0.4 and n_reasoning / n > 0.1
    for row in corpus["rl"]:
        assert set(row) == {"conversations", "gt"} and isinstance(row["gt"], str) and row["gt"].isdigit()
        assert row["conversations"][-1]["role"] == "user" and row["conversations"][-1]["content"]
    for row in corpus["heldout"]:
        assert isinstance(row["question"], str) and isinstance(row["answer"], str) and row["answer"].isdigit()


def test_heldout_never_in_training_sets(corpus):
    questions = [r["question"] for r in corpus["heldout"]]
    training = "\n".join(
        [r["text"] for r in corpus["pretrain"]]
        + [m["content"] for r in corpus["sft"] + corpus["rl"] for m in r["conversations"]]
    )
    for q in questions:
        i = training.find(q)
        while i != -1:  # a match preceded by a digit ("13 + 5 = ?" contains "3 + 5 = ?") is not this question
            assert i > 0 and training[i - 1].isdigit(), f"held-out question leaked into training: {q!r}"
            i = training.find(q, i + 1)
    # Key-level disjointness: the held-out split owns its keys outright, for any size or seed.
    train_keys = {p.key for p in dc.math_problems(3000)}
    heldout_keys = {p.key for p in dc.math_problems(500, heldout=True)}
    assert not train_keys & heldout_keys and len(heldout_keys) > 200


def test_languages_and_punctuation(corpus):
    texts = {
        "pretrain": [r["text"] for r in corpus["pretrain"]],
        "sft": [" ".join(m["content"] for m in r["conversations"]) for r in corpus["sft"]],
        "rl": [r["conversations"][-1]["content"] for r in corpus["rl"]],
        "heldout": [r["question"] for r in corpus["heldout"]],
    }
    for name, docs in texts.items():
        zh = [d for d in docs if _is_zh(d)]
        assert 0.35 < len(zh) / len(docs) < 0.65, name
        for d in zh:  # Chinese text uses Chinese punctuation (ASCII only inside quoted "MiniMind"/maths)
            assert not ASCII_PUNCT.search(d), d
    for r in corpus["heldout"]:
        assert (r["lang"] == "zh") == _is_zh(r["question"])


def test_duplicate_rate(corpus):
    for name, rows in corpus.items():
        keys = [
            r["text"] if name == "pretrain" else json.dumps(r, ensure_ascii=False, sort_keys=True)
            for r in rows
        ]
        assert len(set(keys)) / len(keys) > 0.99, name
    assert len({r["question"] for r in corpus["heldout"]}) == len(corpus["heldout"])


def test_sizes_override(tmp_path):
    paths = dc.write_demo_corpus(tmp_path, sizes={"pretrain": 30, "sft": 20, "rl": 10, "heldout": 5})
    assert [len(_read(paths[k])) for k in ("pretrain", "sft", "rl", "heldout")] == [30, 20, 10, 5]
    assert "答案是" in paths["sft"].read_text(encoding="utf-8") or "The answer is" in paths["sft"].read_text(
        encoding="utf-8"
    )


def _final_number(text: str) -> int:
    return int(re.findall(r"\d+", text)[-1])


def test_dpo_pairs_prefer_the_correct_arithmetic(corpus):
    """Chosen and rejected share the question; the chosen equation is true (re-evaluated here), the rejected
    one ends in a different number, and both state their own result as the answer."""
    rows = corpus["dpo"]
    assert len(rows) == dc.DEFAULT_SIZES["dpo"]
    for row in rows:
        assert row["chosen"][0] == row["rejected"][0] and row["chosen"][0]["role"] == "user"
        good, bad = row["chosen"][1]["content"], row["rejected"][1]["content"]
        equation = re.split(r"[。.] ?(?:答案|The answer)", good)[0]
        left, right = equation.rsplit("=", 1)
        value = eval(left.replace("×", "*").replace("÷", "//"))  # noqa: S307 - digits and operators only
        assert value == int(right) == _final_number(good), good
        assert _final_number(bad) != _final_number(good) and _final_number(bad) >= 0
        assert bad.split("=")[0] == good.split("=")[0]  # same left-hand side: only the result differs


def test_demo_source_generates_once_and_loads(tmp_path, monkeypatch):
    from minimind_hf.data import load_records

    monkeypatch.setenv("MINIMIND_HF_CACHE", str(tmp_path))
    ds = load_records("dpo", "demo:dpo:20")
    assert len(ds) == 20 and set(ds.column_names) >= {"prompt", "chosen", "rejected"}
    (cached,) = (tmp_path / "demo").glob("*/dpo-20.jsonl")  # demo/<generator hash>/dpo-20.jsonl
    mtime = cached.stat().st_mtime_ns
    assert len(load_records("rl", "demo:rl:7")) == 7 and len(load_records("dpo", "demo:dpo:20")) == 20
    assert cached.stat().st_mtime_ns == mtime  # reused, not regenerated
    with pytest.raises(ValueError, match="demo:PART"):
        load_records("sft", "demo:nope")


def test_tool_conversations_call_the_calculator_with_the_right_expression(tmp_path):
    """Every built-in tool-use row is a valid SFT record whose calculator call, run for real, returns the tool
    message it carries, and whose final answer is that result."""
    from minimind_hf.data import load_records
    from minimind_hf.data.demo_corpus import tool_conversations
    from minimind_hf.tools import TOOLS, run_tool_call

    rows = tool_conversations(50)
    path = tmp_path / "tools.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    records = load_records("sft", [str(path)])
    assert len(records) == 50 and records[0]["tools"][0]["function"]["name"] == "calculator"
    for row in rows:
        _, call_msg, tool_msg, final = row["conversations"]
        call = call_msg["tool_calls"][0]["function"]
        assert run_tool_call(TOOLS, call["name"], call["arguments"]) == tool_msg["content"]
        assert tool_msg["content"] in final["content"]


def _frame_pattern(template: str) -> re.Pattern:
    """A training or novel question template as a regex over generated questions ({a}/{name}/... ->
    wildcards)."""
    parts = re.split(r"\{\w+\}", template)
    return re.compile(r"^\s*" + r"\S+?".join(re.escape(p) for p in parts) + r"\s*$")


def test_novel_problems_use_unseen_wordings_and_reserved_keys(corpus):
    rows = dc.novel_problems(400)
    assert len({r["question"] for r in rows}) == 400
    assert {r["family"] for r in rows} == {"add", "sub", "mul", "word"}
    assert {r["lang"] for r in rows} == {"zh", "en"}
    for r in rows:  # our own evaluation of the expression the question needs
        assert int(_calc(r["expr"])) == int(r["answer"]), r
    frames = [
        _frame_pattern(t) for fam in dc._NOVEL_ARITH_TEMPLATES.values() for ts in fam.values() for t in ts
    ] + [_frame_pattern(t) for pair in dc._NOVEL_WORD_TEMPLATES.values() for t in pair]
    assert all(any(f.match(r["question"]) for f in frames) for r in rows)
    # No training stream ever asks a question in a novel frame (user turns, pretrain text lines, RL prompts).
    training = [line for r in corpus["pretrain"] for line in re.split(r"[\n：:]", r["text"])]
    training += [m["content"] for r in corpus["sft"] + corpus["rl"] for m in r["conversations"]]
    training += [m["content"] for r in dc.tool_conversations(500) for m in r["conversations"]]
    leaks = [t for t in training if any(f.match(t) for f in frames)]
    assert not leaks, leaks[:5]
    # Keys: every arithmetic the novel questions need is a reserved (held-out) key.
    problems = dc.math_problems(3000)
    train_pairs = {p.key for p in problems}
    novel_pairs = set()
    for r in rows:
        a, op, b, *rest = r["expr"].split()
        if not rest:
            name = {"+": "add", "-": "sub", "×": "mul"}[op]
            x, y = int(a), int(b)
            novel_pairs.add((name, x, y) if name == "sub" else (name, min(x, y), max(x, y)))
    assert novel_pairs and not novel_pairs & train_pairs
