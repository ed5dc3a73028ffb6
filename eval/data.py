"""Package-side access to the evaluation data: the one implementation lives in ``tasks/utils.py``.

lm-eval imports ``tasks/utils.py`` by file path (``custom_dataset: !function utils.load_ceval``) and the
file stays free of ``minimind_hf`` imports so the ``tasks/`` folder also works on its own. This module
loads that same file so the runner, the CLI and the tests use exactly the code lm-eval runs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from .subjects import BENCHMARKS

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


@lru_cache(maxsize=1)
def task_utils() -> ModuleType:
    """The ``tasks/utils.py`` module (loaded once by path)."""
    path = TASKS_DIR / "utils.py"
    spec = importlib.util.spec_from_file_location("minimind_hf.eval._task_utils", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def __getattr__(name: str):
    """Re-export ``EvalDataError``, ``DATA_ENV``, ``load_subject``, ``read_csv``, ... from
    ``tasks/utils.py``."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return getattr(task_utils(), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def check_data_dir(
    data_dir: str | os.PathLike | None, subjects: Mapping[str, Iterable[str]] | None = None
) -> Path | None:
    """Resolve the data location (``data_dir`` > ``$MINIMIND_EVAL_DATA`` > Hub) and check it before any work.

    ``subjects`` maps a benchmark (``"ceval"``, ``"cmmlu"``) to the subjects about to be run (default: all
    subjects of both). For a local folder each of their CSVs must exist and read cleanly (`read_csv`); the
    first bad file is named in the ``EvalDataError``. Returns the folder, or ``None`` for the Hub.
    """
    utils = task_utils()
    root = utils.resolve_data_dir(data_dir)
    if root is None:
        return None
    if subjects is None:
        subjects = {name: [s.name for s in bench.subjects] for name, bench in BENCHMARKS.items()}
    for name, names in subjects.items():
        bench = BENCHMARKS[name]
        utils.benchmark_dir(root, name)
        for subject in names:
            for split in (bench.eval_split, bench.fewshot_split):
                path = utils.csv_path(root, name, subject, split)
                if not path.is_file():
                    raise utils.EvalDataError(
                        f"{path}: file not found ({bench.title} subject {subject!r}, split {split})"
                    )
                # its content too (columns, answers, encoding), before the model loads
                utils.read_csv(path, name)
    return root


def check_english_data(data_dir: str | os.PathLike | None, names: Iterable[str]) -> None:
    """Read and validate the release files of the English benchmarks `names` before any model loads (the
    ``EvalDataError`` names the file and line); they have no Hub fallback here, so a data dir is needed."""
    names = list(names)
    if not names:
        return
    utils = task_utils()
    root = utils.resolve_data_dir(data_dir)
    if root is None:
        folders = ", ".join(f"{utils.ENGLISH_FILES[n][0]}/" for n in names)
        raise utils.EvalDataError(
            f"the English benchmarks read their official release files: pass --data-dir DIR (or set "
            f"{utils.DATA_ENV}) to the folder holding {folders} (see eval/README.md); online, lm-eval's own "
            "arc_easy / openbookqa / piqa / hellaswag / social_iqa tasks work too"
        )
    for name in names:
        utils.read_english(name, root)
