"""The English benchmarks the original MiniMind reports (issue 14): local-file tasks on the official release
formats that build exactly the requests lm-eval's built-in tasks build, and one command for the whole table.

The fixtures are small files written here in each release's own format (ARC / OpenBookQA: ``question.stem``
and ``question.choices``; PIQA and Social IQa: a jsonl plus a labels file; HellaSwag: ``ctx_a`` / ``ctx_b`` /
``endings`` / ``label``). The built-in task YAMLs are loaded as they are, pointed at the same documents
written in the Hub datasets' schema by this test (its own restatement of that schema).
"""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml
from minimind_hf.eval.data import TASKS_DIR

from minimind_hf.cli import main

BUILTIN = Path(lm_eval.__file__).parent / "tasks"
BUILTIN_YAML = {
    "arc_easy": "arc/arc_easy.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "piqa": "piqa/piqa.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "siqa": "siqa/siqa.yaml",
}


def _jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _arc_rows(n: int, four: bool = True) -> list[dict]:
    labels = ["A", "B", "C", "D"] if four else ["1", "2", "3"]
    return [
        {
            "id": f"q{i}",
            "question": {"stem": f"Which thing number {i} is true?", "choices": [
                {"text": f"option {lab} of {i}", "label": lab} for lab in labels
            ]},
            "answerKey": labels[i % len(labels)],
        }
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, Path]:
    """(data dir in the official layouts, the same documents in the Hub schemas for the built-in tasks)."""
    root, hub = tmp_path_factory.mktemp("english"), tmp_path_factory.mktemp("hub")
    arc = _arc_rows(5) + _arc_rows(1, four=False)  # ARC has a few numeric-label questions
    _jsonl(root / "ARC-Easy" / "ARC-Easy-Test.jsonl", arc)
    obqa = _arc_rows(4)
    _jsonl(root / "openbookqa" / "test.jsonl", obqa)
    piqa = [{"goal": f"How to do {i}?", "sol1": f"way one {i}", "sol2": f"way two {i}"} for i in range(4)]
    _jsonl(root / "piqa" / "valid.jsonl", piqa)
    (root / "piqa" / "valid-labels.lst").write_text("0\n1\n1\n0\n", encoding="utf-8")
    hella = [
        {"ind": i, "activity_label": "Making tea", "ctx_a": f"A man [title] boils water {i}.",
         "ctx_b": "then he", "ctx": "...", "split": "val", "split_type": "indomain", "label": i % 4,
         "endings": [f"pours it [header] {j}." for j in range(4)], "source_id": f"s{i}"}
        for i in range(4)
    ]  # fmt: skip
    _jsonl(root / "hellaswag" / "hellaswag_val.jsonl", hella)
    siqa = [
        {
            "context": f"Alex did thing {i}.",
            "question": "Why?",
            "answerA": "a",
            "answerB": "b",
            "answerC": "c",
        }
        for i in range(3)
    ]
    _jsonl(root / "siqa" / "dev.jsonl", siqa)
    (root / "siqa" / "dev-labels.lst").write_text("1\n3\n2\n", encoding="utf-8")

    def flat(rows, stem):
        return [
            {"id": r["id"], stem: r["question"]["stem"], "answerKey": r["answerKey"],
             "choices": {"text": [c["text"] for c in r["question"]["choices"]],
                         "label": [c["label"] for c in r["question"]["choices"]]}}
            for r in rows
        ]  # fmt: skip

    _jsonl(hub / "arc_easy.jsonl", flat(arc, "question"))
    _jsonl(hub / "openbookqa.jsonl", flat(obqa, "question_stem"))
    _jsonl(hub / "piqa.jsonl", [{**r, "label": lab} for r, lab in zip(piqa, [0, 1, 1, 0], strict=True)])
    _jsonl(hub / "hellaswag.jsonl", [{**r, "label": str(r["label"])} for r in hella])
    _jsonl(hub / "siqa.jsonl", [{**r, "label": lab} for r, lab in zip(siqa, ["1", "3", "2"], strict=True)])
    return root, hub


def _builtin(name: str, hub: Path) -> ConfigurableTask:
    cfg = load_yaml(BUILTIN / BUILTIN_YAML[name])
    split = cfg.get("test_split") or cfg["validation_split"]
    cfg.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {split: str(hub / f"{name}.jsonl")}},
    )
    cfg.pop("tag", None)
    for key in ("training_split", "validation_split", "test_split"):  # only the scored split is written
        if cfg.get(key) != split:
            cfg.pop(key, None)
    if name == "hellaswag":
        from lm_eval.tasks.hellaswag.utils import process_docs

        cfg["process_docs"] = process_docs
    return ConfigurableTask(config=cfg)


def _requests(task) -> list[tuple]:
    task.set_config(key="num_fewshot", value=0)
    task.build_all_requests(rank=0, world_size=1)
    return [(i.doc_id, i.idx, i.request_type, i.arguments) for i in task.instances]


@pytest.mark.parametrize("name", list(BUILTIN_YAML))
def test_requests_identical_to_builtin(release, name):
    root, hub = release
    manager = TaskManager(
        include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(root)}
    )
    ours = manager.load([f"minimind_{name}"])["tasks"][f"minimind_{name}"]
    builtin = _builtin(name, hub)
    got, expected = _requests(ours), _requests(builtin)
    assert got and got == expected
    assert [ours.doc_to_target(d) for d in ours.eval_docs] == [
        builtin.doc_to_target(d) for d in builtin.eval_docs
    ]
    assert ours.config.metric_list == builtin.config.metric_list
    assert ours.config.metadata["version"] == builtin.config.metadata["version"]


def test_the_original_table_in_one_command(release, model_dir, shared_data, tmp_path, monkeypatch, caplog):
    """`eval run MODEL --tasks minimind_original`: C-Eval, CMMLU and the five English sets, one results.md."""
    root, _ = release
    for sub in ("ceval", "cmmlu"):  # one data dir holding every benchmark, as a user lays it out
        (root / sub).symlink_to(shared_data / sub)
    out = tmp_path / "out"
    code = main(["eval", "run", str(model_dir), "--tasks", "minimind_original", "--data-dir", str(root),
                 "--limit", "2", "--out", str(out), "--batch-size", "16"])  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for name in BUILTIN_YAML:
        assert 0.0 <= results["results"][f"minimind_{name}"]["acc,none"] <= 1.0
    assert "minimind_ceval" in results["results"] and "minimind_cmmlu" in results["results"]
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "### English benchmarks" in md and "| HellaSwag | 2 |" in md and "### C-Eval (val)" in md


def test_a_bad_release_file_is_named_before_the_model_loads(release, tmp_path, caplog):
    root, _ = release
    bad = tmp_path / "bad"
    (bad / "piqa").mkdir(parents=True)
    (bad / "piqa" / "valid.jsonl").write_text((root / "piqa" / "valid.jsonl").read_text(), encoding="utf-8")
    (bad / "piqa" / "valid-labels.lst").write_text("0\n1\n", encoding="utf-8")
    code = main(
        ["eval", "run", str(tmp_path / "no-model-needed"), "--tasks", "minimind_piqa", "--data-dir", str(bad)]
    )
    assert code == 2  # the model path is checked first: make it exist
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "tokenizer.json").write_text("{}")
    caplog.clear()
    code = main(["eval", "run", str(tmp_path / "m"), "--tasks", "minimind_piqa", "--data-dir", str(bad)])
    assert code == 2 and "valid-labels.lst: 2 labels for the 4 rows of valid.jsonl" in caplog.text
    caplog.clear()
    code = main(["eval", "run", str(tmp_path / "m"), "--tasks", "minimind_english"])
    assert code == 2 and "pass --data-dir DIR" in caplog.text
