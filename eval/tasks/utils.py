"""Where the C-Eval / CMMLU documents come from: the ``custom_dataset`` functions of our lm-eval tasks.

Every ``minimind_ceval_*`` / ``minimind_cmmlu_*`` task YAML names ``custom_dataset: !function
utils.load_ceval`` (or ``load_cmmlu``) and ``dataset_kwargs: {subject: ...}``. lm-eval calls the function
with the task's metadata (``--metadata`` JSON on its CLI, ``TaskManager(metadata=...)`` in Python) and the
dataset kwargs, so the data location is decided at run time, in this order:

1. ``data_dir`` in the metadata (``minimind-hf eval --data-dir DIR`` sets it);
2. the ``MINIMIND_EVAL_DATA`` environment variable;
3. otherwise the Hugging Face Hub datasets lm-eval's built-in tasks use (``ceval/ceval-exam``,
   ``haonan-li/cmmlu``).

A data dir holds the official CSV releases: ``ceval/{val,dev}/<subject>_{val,dev}.csv`` and
``cmmlu/{test,dev}/<subject>.csv``. Cells are read as exact text (no number or NA guessing, so an option
``00001100`` stays ``00001100``); CMMLU's unnamed index column is dropped, as the Hub dataset has none.

This file imports only the standard library and ``datasets``: the ``tasks/`` folder also works on its own,
``lm_eval --include_path eval/tasks --tasks minimind_ceval --metadata '{"data_dir": "..."}'``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

DATA_ENV = "MINIMIND_EVAL_DATA"
HUB_PATHS = {"ceval": "ceval/ceval-exam", "cmmlu": "haonan-li/cmmlu"}
SPLITS = {"ceval": ("val", "dev"), "cmmlu": ("test", "dev")}  # (scored split, few-shot split)
REQUIRED_COLUMNS = {
    "ceval": ("question", "A", "B", "C", "D", "answer"),
    "cmmlu": ("Question", "A", "B", "C", "D", "Answer"),
}
ANSWERS = ("A", "B", "C", "D")


class EvalDataError(ValueError):
    """The evaluation data is missing or malformed; the message names the file (and line/field)."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data folder to read, or ``None`` for the Hub (``data_dir`` > ``$MINIMIND_EVAL_DATA``).

    The value ``"hub"`` (either place) also selects the Hub.
    """
    value = data_dir if data_dir not in (None, "") else os.environ.get(DATA_ENV) or None
    if value is None or str(value) == "hub":
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "data_dir" if data_dir not in (None, "") else f"${DATA_ENV}"
        raise EvalDataError(
            f"{origin}={value}: not a folder. Point it at the folder holding ceval/ and cmmlu/ "
            "(the official CSV releases), or unset it to use the Hugging Face Hub."
        )
    return path


def benchmark_dir(root: Path, benchmark: str) -> Path:
    """``root/<benchmark>`` after checking it has the split folders of the official release."""
    folder = root / benchmark
    expected = ", ".join(f"{benchmark}/{s}/" for s in SPLITS[benchmark])
    if not folder.is_dir():
        raise EvalDataError(
            f"{root}: no {benchmark}/ folder; a data dir must hold {expected} (official CSVs)"
        )
    for split in SPLITS[benchmark]:
        if not (folder / split).is_dir():
            raise EvalDataError(f"{folder}: no {split}/ folder; expected {expected}")
    return folder


def csv_path(root: Path, benchmark: str, subject: str, split: str) -> Path:
    """Path of one subject's split in the official layout (C-Eval: ``<subject>_<split>.csv``)."""
    name = f"{subject}_{split}.csv" if benchmark == "ceval" else f"{subject}.csv"
    return root / benchmark / split / name


def read_csv(path: Path, benchmark: str) -> list[dict[str, str]]:
    """Rows of an official CSV as exact strings, validated: required columns present, answers in A-D."""
    if not path.is_file():
        raise EvalDataError(f"{path}: file not found (a subject's CSV is missing from the data dir)")
    try:
        return _read_rows(path, benchmark)
    except UnicodeDecodeError as e:  # e.g. a CSV re-saved by Excel in GBK
        raise EvalDataError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); the official CSVs are UTF-8: convert it, "
            f"e.g. iconv -f GBK -t UTF-8"
        ) from None


def _read_rows(path: Path, benchmark: str) -> list[dict[str, str]]:
    required = REQUIRED_COLUMNS[benchmark]
    answer_col = required[-1]
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise EvalDataError(f"{path}: empty file, expected a header with {', '.join(required)}")
        missing = [c for c in required if c not in header]
        if missing:
            raise EvalDataError(f"{path}: header {header} lacks column(s) {', '.join(missing)}")
        keep = [(i, name) for i, name in enumerate(header) if name]  # drop CMMLU's unnamed index column
        rows = []
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise EvalDataError(
                    f"{path}:{line}: {len(row)} fields, expected {len(header)} ({', '.join(header)})"
                )
            record = {name: row[i] for i, name in keep}
            if record[answer_col] not in ANSWERS:
                raise EvalDataError(
                    f"{path}:{line}: {answer_col}={record[answer_col]!r}, expected one of A, B, C, D"
                )
            rows.append(record)
    if not rows:
        raise EvalDataError(f"{path}: no rows")
    return rows


def _to_dataset(rows: list[dict[str, str]]):
    import datasets

    columns = list(rows[0])
    features = datasets.Features({c: datasets.Value("string") for c in columns})
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns}, features=features)


def load_subject(benchmark: str, subject: str, data_dir: str | os.PathLike | None = None):
    """A ``datasets.DatasetDict`` with the scored and few-shot splits of one subject.

    Local CSVs when a data dir is set (see the module docstring), else the Hub dataset lm-eval uses.
    """
    import datasets

    if benchmark not in SPLITS:
        raise EvalDataError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir)
    if root is None:
        try:
            return datasets.load_dataset(HUB_PATHS[benchmark], subject)
        except Exception as err:  # network, missing config, script-based dataset, ...
            raise EvalDataError(
                f"could not load {benchmark} subject {subject!r} from the Hub dataset {HUB_PATHS[benchmark]} "
                f"({type(err).__name__}: {err}). Download the official CSVs and pass --data-dir DIR "
                f"(or set {DATA_ENV}) to the folder holding {benchmark}/."
            ) from err
    benchmark_dir(root, benchmark)
    return datasets.DatasetDict(
        {
            split: _to_dataset(read_csv(csv_path(root, benchmark, subject, split), benchmark))
            for split in SPLITS[benchmark]
        }
    )


def load_ceval(subject: str, data_dir: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset`` for C-Eval: splits ``val`` (scored) and ``dev`` (few-shot)."""
    return load_subject("ceval", subject, data_dir)


def load_cmmlu(subject: str, data_dir: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset`` for CMMLU: splits ``test`` (scored) and ``dev`` (few-shot)."""
    return load_subject("cmmlu", subject, data_dir)
