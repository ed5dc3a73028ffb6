"""Where the C-Eval / CMMLU documents come from: the ``custom_dataset`` functions of our lm-eval tasks.

Every ``minimind_ceval_*`` / ``minimind_cmmlu_*`` task YAML names ``custom_dataset: !function
utils.load_ceval`` (or ``load_cmmlu``) and ``dataset_kwargs: {subject: ...}``. lm-eval calls the function
with the task's metadata (``--metadata`` JSON on its CLI, ``TaskManager(metadata=...)`` in Python) and the
dataset kwargs, so the data location is decided at run time, in this order:

1. ``data_dir`` in the metadata (``minimind-hf eval run --data-dir DIR`` sets it);
2. the ``MINIMIND_EVAL_DATA`` environment variable;
3. otherwise the Hugging Face Hub datasets lm-eval's built-in tasks use (``ceval/ceval-exam``,
   ``haonan-li/cmmlu``).

A data dir holds the official CSV releases: ``ceval/{val,dev}/<subject>_{val,dev}.csv`` and
``cmmlu/{test,dev}/<subject>.csv``. Cells are read as exact text (no number or NA guessing, so an option
``00001100`` stays ``00001100``); CMMLU's unnamed index column is dropped, as the Hub dataset has none.

The English benchmarks (``minimind_arc_easy``, ``_openbookqa``, ``_piqa``, ``_hellaswag``, ``_siqa``) read
their official release files from the same data dir (`ENGLISH_FILES`; no Hub fallback: lm-eval's own tasks
cover that) into the Hub datasets' schema, so their YAMLs keep lm-eval's prompts as they are.

This file imports only the standard library, ``datasets`` and (for HellaSwag's preprocessing) ``lm_eval``: the
``tasks/`` folder also works on its own,
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
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); the official CSVs are UTF-8: convert "
            "it, e.g. iconv -f GBK -t UTF-8"
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
        start = reader.line_num + 1  # where the next row begins (a quoted field may span lines)
        for row in reader:
            where = f"{path}:{start}"
            if reader.line_num - start > 20:  # one question never spans that many lines: a quote left open
                where += f" (this row runs on to line {reader.line_num}: an unclosed quote?)"
            start = reader.line_num + 1
            if not row:
                continue
            if len(row) != len(header):
                raise EvalDataError(
                    f"{where}: {len(row)} fields, expected {len(header)} ({', '.join(header)})"
                )
            record = {name: row[i] for i, name in keep}
            if record[answer_col] not in ANSWERS:
                raise EvalDataError(
                    f"{where}: {answer_col}={record[answer_col]!r}, expected one of A, B, C, D"
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


# ----------------------------------------------------------------------------------- English benchmarks
# The five English sets the original MiniMind reports beside C-Eval / CMMLU, read from their official release
# files and turned into the Hub datasets' schema, so the task YAMLs can use lm-eval's built-in prompts as they
# are. File -> (folder under the data dir, files, split): the scored split of lm-eval's built-in task.
ENGLISH_FILES = {
    "arc_easy": ("ARC-Easy", ("ARC-Easy-Test.jsonl",), "test"),  # ARC-V1-Feb2018/ARC-Easy/
    "openbookqa": ("openbookqa", ("test.jsonl",), "test"),  # OpenBookQA-V1-Sep2018/Data/Main/
    "piqa": ("piqa", ("valid.jsonl", "valid-labels.lst"), "validation"),
    "hellaswag": ("hellaswag", ("hellaswag_val.jsonl",), "validation"),
    "siqa": ("siqa", ("dev.jsonl", "dev-labels.lst"), "validation"),  # socialiqa-train-dev/
}


def english_paths(root: Path, name: str) -> list[Path]:
    folder, files, _ = ENGLISH_FILES[name]
    return [root / folder / f for f in files]


def _jsonl(path: Path) -> list[dict]:
    import json

    if not path.is_file():
        raise EvalDataError(f"{path}: file not found (the official release file of this benchmark)")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalDataError(f"{path}:{lineno}: not a JSON line ({e.msg})") from None
            if not isinstance(row, dict):
                raise EvalDataError(f"{path}:{lineno}: expected a JSON object")
            rows.append((lineno, row))
    if not rows:
        raise EvalDataError(f"{path}: no rows")
    return rows


def _labels(path: Path, n: int, jsonl: Path) -> list[str]:
    if not path.is_file():
        raise EvalDataError(f"{path}: file not found (the labels file released beside {jsonl.name})")
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(labels) != n:
        raise EvalDataError(f"{path}: {len(labels)} labels for the {n} rows of {jsonl.name}")
    return labels


def _field(path: Path, lineno: int, row: dict, key: str, kind: type = str):
    value = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, kind):
        raise EvalDataError(f"{path}:{lineno}: {key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _arc_like(path: Path, stem_key: str) -> list[dict]:
    """ARC / OpenBookQA release rows (``question: {stem, choices: [{text, label}]}``, ``answerKey``) in the
    Hub schema (``choices: {text: [...], label: [...]}``; the question under `stem_key`)."""
    out = []
    for lineno, row in _jsonl(path):
        choices = _field(path, lineno, row, "question.choices", list)
        texts = [_field(path, lineno, c, "text") for c in choices]
        labels = [_field(path, lineno, c, "label") for c in choices]
        key = _field(path, lineno, row, "answerKey").strip()
        if key not in labels:
            raise EvalDataError(f"{path}:{lineno}: answerKey {key!r} is not one of the labels {labels}")
        out.append(
            {
                "id": str(row.get("id", lineno)),
                stem_key: _field(path, lineno, row, "question.stem"),
                "choices": {"text": texts, "label": labels},
                "answerKey": key,
            }
        )
    return out


def read_english(name: str, root: Path) -> list[dict]:
    """The scored documents of English benchmark `name` from its release files under `root`, validated
    (file:line: field on a problem), in the schema of the Hub dataset lm-eval's built-in task reads."""
    paths = english_paths(root, name)
    if name == "arc_easy":
        return _arc_like(paths[0], "question")
    if name == "openbookqa":
        return _arc_like(paths[0], "question_stem")
    if name == "hellaswag":
        rows = []
        for lineno, row in _jsonl(paths[0]):
            endings = _field(paths[0], lineno, row, "endings", list)
            rows.append(
                {
                    "activity_label": _field(paths[0], lineno, row, "activity_label"),
                    "ctx_a": _field(paths[0], lineno, row, "ctx_a"),
                    "ctx_b": _field(paths[0], lineno, row, "ctx_b"),
                    "endings": [str(e) for e in endings],
                    "label": str(_field(paths[0], lineno, row, "label", int)),
                }
            )
        return rows
    rows = _jsonl(paths[0])
    labels = _labels(paths[1], len(rows), paths[0])
    if name == "piqa":
        keys = ("goal", "sol1", "sol2")
        valid = ("0", "1")
    else:  # siqa
        keys = ("context", "question", "answerA", "answerB", "answerC")
        valid = ("1", "2", "3")
    out = []
    for (lineno, row), label in zip(rows, labels, strict=True):
        if label not in valid:
            raise EvalDataError(f"{paths[1]}: label {label!r} for line {lineno}; expected one of {valid}")
        doc = {k: _field(paths[0], lineno, row, k) for k in keys}
        doc["label"] = int(label) if name == "piqa" else label
        out.append(doc)
    return out


def load_english(name: str, data_dir: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset`` for the English benchmarks: the built-in task's scored split, read from
    the official release files under the data dir (these tasks are local-file versions of lm-eval's own)."""
    import datasets

    root = resolve_data_dir(data_dir)
    if root is None:
        raise EvalDataError(
            f"minimind_{name} reads the official release files: pass --data-dir DIR (or set {DATA_ENV}) to "
            f"the folder holding {ENGLISH_FILES[name][0]}/; online, lm-eval's own task works too"
        )
    return datasets.DatasetDict(
        {ENGLISH_FILES[name][2]: datasets.Dataset.from_list(read_english(name, root))}
    )


def hellaswag_docs(dataset):
    """lm-eval's hellaswag ``process_docs`` (query / choices / gold), called as the built-in task calls it."""
    from lm_eval.tasks.hellaswag.utils import process_docs

    return process_docs(dataset)
