"""Names of our lm-eval tasks and groups, and the way back from a name to its benchmark and subjects.

    minimind_ceval                      C-Eval overall group (4 categories, 52 subjects)
    minimind_ceval_stem                 a category group (stem, social_science, humanities, other)
    minimind_ceval_accountant           one subject
    minimind_cmmlu, minimind_cmmlu_china_specific, minimind_cmmlu_agronomy, ...
    minimind_ceval_5shot, minimind_ceval_5shot_stem, minimind_ceval_5shot_accountant, ...   (5-shot)

The 0-shot names leave ``num_fewshot`` unset, so ``--num-fewshot`` applies to them; the ``_5shot`` names
set it to 5 (``--num-fewshot`` still overrides).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from .subjects import BENCHMARKS, MAIN_CATEGORIES

TASK_PREFIX = "minimind_"
VARIANTS = {"": None, "_5shot": 5}  # name suffix -> num_fewshot written in the YAML (None = left unset)
DEFAULT_TASKS = ("minimind_ceval", "minimind_cmmlu")
# the English benchmarks the original reports (tasks minimind_<name>, group minimind_english), read from their
# official release files; minimind_original is the original's whole table (C-Eval, CMMLU and these)
ENGLISH_BENCHMARKS = ("arc_easy", "openbookqa", "piqa", "hellaswag", "siqa")
ENGLISH_GROUP, ORIGINAL_GROUP = f"{TASK_PREFIX}english", f"{TASK_PREFIX}original"


class TaskSelectionError(ValueError):
    """The requested task names cannot run (unknown, or two of them share a subject)."""


@dataclass(frozen=True)
class TaskRef:
    """What a subject task name stands for."""

    benchmark: str
    variant: str
    subject: str


def group_name(benchmark: str, category: str | None = None, variant: str = "") -> str:
    """Overall group (``minimind_ceval``, ``minimind_ceval_5shot``) or a category group (``..._stem``)."""
    base = f"{TASK_PREFIX}{benchmark}{variant}"
    return f"{base}_{category}" if category else base


def task_name(benchmark: str, subject: str, variant: str = "") -> str:
    """``minimind_ceval_accountant``, ``minimind_cmmlu_5shot_agronomy``, ..."""
    return f"{group_name(benchmark, variant=variant)}_{subject}"


@lru_cache(maxsize=1)
def subject_tasks() -> dict[str, TaskRef]:
    """Every subject task name -> its benchmark, variant and subject."""
    return {
        task_name(b.name, s.name, v): TaskRef(b.name, v, s.name)
        for b in BENCHMARKS.values()
        for v in VARIANTS
        for s in b.subjects
    }


@lru_cache(maxsize=1)
def group_members() -> dict[str, tuple[str, ...]]:
    """Every group name -> the names of its direct members (subject tasks, or category groups)."""
    groups: dict[str, tuple[str, ...]] = {}
    for b in BENCHMARKS.values():
        for v in VARIANTS:
            for c in b.categories:
                groups[group_name(b.name, c, v)] = tuple(
                    task_name(b.name, s.name, v) for s in b.subjects if c in s.categories
                )
            groups[group_name(b.name, variant=v)] = tuple(group_name(b.name, c, v) for c in MAIN_CATEGORIES)
    return groups


def leaves(name: str) -> list[str]:
    """The subject task names under one of our task/group names (``[name]`` for a subject task)."""
    if name in group_members():
        return [leaf for member in group_members()[name] for leaf in leaves(member)]
    if name in subject_tasks():
        return [name]
    raise KeyError(f"{name!r} is not one of our tasks or groups")


def english_selected(names: Iterable[str]) -> list[str]:
    """The English benchmarks (``ENGLISH_BENCHMARKS`` names) that `names` select, in order."""
    picked = set()
    for name in names:
        if name in (ENGLISH_GROUP, ORIGINAL_GROUP):
            picked.update(ENGLISH_BENCHMARKS)
        elif name.removeprefix(TASK_PREFIX) in ENGLISH_BENCHMARKS:
            picked.add(name.removeprefix(TASK_PREFIX))
    return [b for b in ENGLISH_BENCHMARKS if b in picked]


def is_english(name: str) -> bool:
    return name in (ENGLISH_GROUP, ORIGINAL_GROUP) or name.removeprefix(TASK_PREFIX) in ENGLISH_BENCHMARKS


def expand(names: Iterable[str]) -> tuple[dict[str, set[str]], list[str]]:
    """Split task/group names into ``({benchmark: subjects}, names that are not ours)``.

    Raises ``TaskSelectionError`` when two names share a subject task (lm-eval refuses duplicates), e.g.
    ``minimind_cmmlu`` with ``minimind_cmmlu_china_specific``.
    """
    subjects: dict[str, set[str]] = {}
    foreign: list[str] = []
    owner: dict[str, str] = {}
    for name in names:
        if name not in subject_tasks() and name not in group_members():
            foreign.append(name)
            continue
        for leaf in leaves(name):
            if leaf in owner:
                raise TaskSelectionError(
                    f"{leaf} is in both {owner[leaf]} and {name}: lm-eval runs a task once; drop one of them "
                    "(results.md computes every category, China specific included, from the subjects run)"
                )
            owner[leaf] = name
            ref = subject_tasks()[leaf]
            subjects.setdefault(ref.benchmark, set()).add(ref.subject)
    return subjects, foreign
