"""The checked-in task YAMLs: in sync with the generator, faithful to lm-eval's built-in C-Eval/CMMLU
configs, and grouped by the official categories."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from lm_eval.tasks._yaml_loader import load_yaml
from minimind_hf.eval import catalog
from minimind_hf.eval.data import TASKS_DIR
from minimind_hf.eval.generate_tasks import out_of_sync, write_tasks
from minimind_hf.eval.subjects import BENCHMARKS, CEVAL, CHINA_SPECIFIC, CMMLU, MAIN_CATEGORIES

BUILTIN = Path(lm_eval.__file__).parent / "tasks"
BUILTIN_NAMES = {
    "ceval": ("ceval", "ceval-valid_{}.yaml", "_ceval-valid.yaml"),
    "cmmlu": ("cmmlu", "cmmlu_{}.yaml", "_cmmlu.yaml"),
}
# Everything that decides the requests and the metrics; must be identical to lm-eval's own config.
SAME_AS_BUILTIN = (
    "description",
    "doc_to_text",
    "doc_to_choice",
    "doc_to_target",
    "output_type",
    "fewshot_split",
    "validation_split",
    "test_split",
    "fewshot_config",
    "metric_list",
    "target_delimiter",
    "fewshot_delimiter",
)


def test_checked_in_yamls_match_the_generator():
    assert out_of_sync(TASKS_DIR) == [], "run: python -m minimind_hf.eval.generate_tasks"


def test_generator_detects_stale_missing_and_extra_files(tmp_path):
    write_tasks(tmp_path)
    assert out_of_sync(tmp_path) == []
    (tmp_path / "ceval" / "minimind_ceval_law.yaml").write_text("task: changed\n", encoding="utf-8")
    (tmp_path / "cmmlu" / "minimind_cmmlu_agronomy.yaml").unlink()
    (tmp_path / "cmmlu" / "minimind_cmmlu_retired.yaml").write_text("task: old\n", encoding="utf-8")
    assert out_of_sync(tmp_path) == [
        "differs: ceval/minimind_ceval_law.yaml",
        "missing: cmmlu/minimind_cmmlu_agronomy.yaml",
        "extra: cmmlu/minimind_cmmlu_retired.yaml",
    ]


@pytest.mark.parametrize("benchmark", ["ceval", "cmmlu"])
def test_subjects_are_lm_evals_and_every_config_matches_the_builtin(benchmark):
    folder, pattern, group_file = BUILTIN_NAMES[benchmark]
    builtin_group = load_yaml(BUILTIN / folder / group_file, resolve_func=False)
    builtin_subjects = [
        t.split("_", 1)[1] if benchmark == "cmmlu" else t.removeprefix("ceval-valid_")
        for t in builtin_group["task"]
    ]
    ours = BENCHMARKS[benchmark]
    assert sorted(s.name for s in ours.subjects) == sorted(builtin_subjects)
    assert len(ours.subjects) == {"ceval": 52, "cmmlu": 67}[benchmark]
    # the group aggregation is lm-eval's (size-weighted mean of acc and acc_norm)
    ours_group = load_yaml(TASKS_DIR / benchmark / f"_minimind_{benchmark}.yaml", resolve_func=False)
    assert ours_group["aggregate_metric_list"] == builtin_group["aggregate_metric_list"]
    for subject in ours.subjects:
        builtin = load_yaml(BUILTIN / folder / pattern.format(subject.name), resolve_func=False)
        mine = load_yaml(
            TASKS_DIR / benchmark / f"{catalog.task_name(benchmark, subject.name)}.yaml", resolve_func=False
        )
        for key in SAME_AS_BUILTIN:
            assert mine.get(key) == builtin.get(key), (subject.name, key)
        assert mine["dataset_kwargs"] == {"subject": subject.name} and builtin["dataset_name"] == subject.name
        assert "num_fewshot" not in mine  # 0-shot by default, and --num-fewshot can override it
        five = load_yaml(
            TASKS_DIR / f"{benchmark}_5shot" / f"{catalog.task_name(benchmark, subject.name, '_5shot')}.yaml",
            resolve_func=False,
        )
        assert five["num_fewshot"] == 5
        assert {k: five.get(k) for k in SAME_AS_BUILTIN} == {k: mine.get(k) for k in SAME_AS_BUILTIN}


def test_categories_are_the_official_ones(shared_data):
    mapping = json.loads((shared_data / "ceval" / "subject_mapping.json").read_text(encoding="utf-8"))
    official = {
        "STEM": "stem",
        "Social Science": "social_science",
        "Humanities": "humanities",
        "Other": "other",
    }
    assert {s.name: s.category for s in CEVAL.subjects} == {k: official[v[2]] for k, v in mapping.items()}
    assert {s.name: s.zh for s in CEVAL.subjects} == {k: v[1] for k, v in mapping.items()}

    cats = json.loads((shared_data / "cmmlu" / "subject_categories.json").read_text(encoding="utf-8"))
    sub_to_cat = {sub: c for c, subs in cats["categories"].items() for sub in subs}
    for s in CMMLU.subjects:
        expected = {sub_to_cat[sub] for sub in cats["subcategories"][s.name]}
        got = {{**official, "China specific": CHINA_SPECIFIC}.get(c) for c in expected}
        assert set(s.categories) == got, s.name
        assert s.zh == cats["name_en2zh"][s.name]


@pytest.mark.parametrize("variant", ["", "_5shot"])
@pytest.mark.parametrize("benchmark", ["ceval", "cmmlu"])
def test_overall_group_covers_every_subject_once_through_the_categories(benchmark, variant):
    overall = catalog.group_name(benchmark, variant=variant)
    members = catalog.group_members()[overall]
    assert members == tuple(catalog.group_name(benchmark, c, variant) for c in MAIN_CATEGORIES)
    leaves = catalog.leaves(overall)
    assert sorted(leaves) == sorted(
        catalog.task_name(benchmark, s.name, variant) for s in BENCHMARKS[benchmark].subjects
    )
    if benchmark == "cmmlu":
        assert len(catalog.group_members()[catalog.group_name("cmmlu", CHINA_SPECIFIC, variant)]) == 15
    with pytest.raises(ValueError, match="in both"):
        catalog.expand([overall, catalog.leaves(overall)[0]])


def test_lm_eval_indexes_every_task_and_group():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    names = set(catalog.subject_tasks()) | set(catalog.group_members())
    assert names <= set(manager.all_tasks)
    extra = {catalog.ENGLISH_GROUP, catalog.ORIGINAL_GROUP}  # the English benchmarks' group, the whole table
    assert set(manager.all_groups) == set(catalog.group_members()) | extra
    english = {f"{catalog.TASK_PREFIX}{n}" for n in catalog.ENGLISH_BENCHMARKS}
    assert english <= set(manager.all_tasks)
    from minimind_hf.eval.data import task_utils
    from minimind_hf.eval.generate_tasks import ENGLISH

    assert tuple(task_utils().ENGLISH_FILES) == tuple(ENGLISH) == catalog.ENGLISH_BENCHMARKS
    assert not any(name.endswith("_template_yaml") for name in manager.all_tasks)
