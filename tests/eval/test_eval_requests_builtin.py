"""Our tasks build exactly the requests lm-eval's built-in ``ceval-valid`` / ``cmmlu`` tasks build for the
same documents (the built-in YAML loaded as is and pointed at the same local CSVs), 0-shot and 5-shot,
and the few-shot prompts are made of the subject's dev examples, in file order."""

from __future__ import annotations

import csv
from pathlib import Path

import lm_eval
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml
from minimind_hf.eval.catalog import task_name
from minimind_hf.eval.data import TASKS_DIR

BUILTIN = Path(lm_eval.__file__).parent / "tasks"
CASES = [
    ("ceval", "accountant"),
    ("ceval", "high_school_physics"),
    ("cmmlu", "agronomy"),
    ("cmmlu", "computer_science"),
]
LIMIT = 6


def _builtin_task(benchmark: str, subject: str, data_dir: Path) -> ConfigurableTask:
    """lm-eval's own task config, loaded as is, with only its dataset pointed at the local CSVs."""
    if benchmark == "ceval":
        cfg = load_yaml(BUILTIN / "ceval" / f"ceval-valid_{subject}.yaml")
        files = {
            "val": f"{data_dir}/ceval/val/{subject}_val.csv",
            "dev": f"{data_dir}/ceval/dev/{subject}_dev.csv",
        }
        columns = ["id", "question", "A", "B", "C", "D", "answer"]  # dev's extra `explanation` is unused
    else:
        cfg = load_yaml(BUILTIN / "cmmlu" / f"cmmlu_{subject}.yaml")
        files = {"test": f"{data_dir}/cmmlu/test/{subject}.csv", "dev": f"{data_dir}/cmmlu/dev/{subject}.csv"}
        columns = ["Question", "A", "B", "C", "D", "Answer"]
    assert cfg["dataset_path"] in ("ceval/ceval-exam", "haonan-li/cmmlu") and cfg["dataset_name"] == subject
    cfg.update(
        dataset_path="csv", dataset_name=None, dataset_kwargs={"data_files": files, "usecols": columns}
    )
    return ConfigurableTask(config=cfg)


@pytest.fixture(scope="module")
def our_tasks(shared_data):
    manager = TaskManager(
        include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(shared_data)}
    )
    names = [task_name(b, s, v) for b, s in CASES for v in ("", "_5shot")]
    return manager.load(names)["tasks"]


def _requests(task, num_fewshot: int) -> list[tuple]:
    task.set_config(key="num_fewshot", value=num_fewshot)
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=LIMIT, rank=0, world_size=1)
    return [(i.doc_id, i.idx, i.request_type, i.arguments) for i in task.instances]


@pytest.mark.parametrize("shots", [0, 5])
@pytest.mark.parametrize(("benchmark", "subject"), CASES)
def test_requests_identical_to_builtin(our_tasks, shared_data, benchmark, subject, shots):
    builtin = _builtin_task(benchmark, subject, shared_data)
    ours = our_tasks[task_name(benchmark, subject)]
    expected = _requests(builtin, shots)
    got = _requests(ours, shots)
    assert len(got) == LIMIT * 4
    assert got == expected
    docs = list(ours.eval_docs)[:LIMIT]
    assert [ours.doc_to_target(d) for d in docs] == [
        builtin.doc_to_target(d) for d in list(builtin.eval_docs)[:LIMIT]
    ]


@pytest.mark.parametrize(("benchmark", "subject"), CASES)
def test_five_shot_prompts_are_the_dev_examples_in_order(our_tasks, shared_data, benchmark, subject):
    task = our_tasks[task_name(benchmark, subject, "_5shot")]
    assert task.config.num_fewshot == 5
    if benchmark == "ceval":
        dev_path, q, ans = shared_data / "ceval" / "dev" / f"{subject}_dev.csv", "question", "answer"
    else:
        dev_path, q, ans = shared_data / "cmmlu" / "dev" / f"{subject}.csv", "Question", "Answer"
    with dev_path.open(encoding="utf-8", newline="") as fh:
        dev = list(csv.DictReader(fh))
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=2, rank=0, world_size=1)
    context, continuation = task.instances[0].arguments
    assert continuation == " A"
    shots = [
        f"{row[q].strip()}\nA. {row['A']}\nB. {row['B']}\nC. {row['C']}\nD. {row['D']}\n答案： {row[ans]}"
        for row in dev
    ]
    description = task.config.description
    doc = task.eval_docs[0]
    question = f"{doc[q].strip()}\nA. {doc['A']}\nB. {doc['B']}\nC. {doc['C']}\nD. {doc['D']}\n答案："
    assert context == description + "\n\n".join(shots) + "\n\n" + question
    zero = our_tasks[task_name(benchmark, subject)]
    zero.set_config(key="num_fewshot", value=0)
    zero.build_all_requests(limit=1, rank=0, world_size=1)
    assert zero.instances[0].arguments[0] == description + question
