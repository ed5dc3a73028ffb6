"""Load training records of one kind (pretrain, sft, dpo, rl) into a validated `datasets.Dataset`.

    >>> from minimind_hf.data import load_records
    >>> ds = load_records("sft", "data/sft/sft_mix.jsonl")
    >>> ds, report = load_records("dpo", "data/dpo", skip_invalid=True, return_report=True)

Every row is checked and normalised by `validate_record` (accepted inputs and the output columns of
each kind are documented in `minimind_hf.data.schemas`); an invalid row stops loading with a
`RecordError` naming file, line and field::

    sft.jsonl:17: conversations[2].role: unknown role 'bot' (expected one of system, user, assistant, tool)

Line numbers are 1-based physical lines for JSON Lines files; parquet files, JSON arrays and hub
datasets give a 0-based ``row``. With ``skip_invalid=True`` invalid rows are dropped instead and
counted by reason; one warning sums them up (via `logging`), and ``return_report=True`` also returns
the counts as a `LoadReport`. If no row at all is valid, loading fails either way.

Local files are read here, line by line, so errors know their line; validated rows stream into a
`Dataset` through ``Dataset.from_generator`` (Arrow on disk, not a Python list in memory). The result
is cached under the `datasets` cache, keyed on the files' path, size and modification time, the
kind, ``skip_invalid`` and this package's validation code; the report is cached beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset, IterableDataset
from datasets.exceptions import DatasetGenerationError

from .errors import RecordError
from .schemas import RECORD_FEATURES, RECORD_KINDS, check_kind, validate_record
from .sources import Source, SourceLike, iter_rows, resolve_sources

__all__ = ["RECORD_FEATURES", "RECORD_KINDS", "LoadReport", "RecordError", "load_records", "validate_record"]

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5  # invalid records quoted in the skip summary
_REPORT_FILE = "minimind_load_report.json"
_SKIP_HINT = (
    "Fix the record, or pass skip_invalid=True to drop invalid records (they are counted and logged)."
)


@dataclass
class LoadReport:
    """What `load_records` read: rows seen, kept, and skipped per reason.

    Attributes:
        kind: the record kind loaded.
        sources: the files (or hub names) read, in order.
        total: non-blank rows read.
        kept: rows in the returned dataset.
        skipped: invalid rows per `RecordError.reason`, e.g. ``{"unknown_role": 2}``.
        examples: the first few invalid rows' error messages (with file and line).
        from_cache: the dataset (and this report) came from the `datasets` cache.
    """

    kind: str
    sources: list[str]
    total: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    from_cache: bool = False

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def add_skip(self, err: RecordError) -> None:
        self.skipped[err.reason] = self.skipped.get(err.reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(err))

    def summary(self) -> str:
        """One paragraph: counts per reason and the first examples."""
        where = self.sources[0] if len(self.sources) == 1 else f"{len(self.sources)} sources"
        reasons = ", ".join(f"{r}={n}" for r, n in Counter(self.skipped).most_common())
        lines = [
            f"skipped {self.num_skipped} of {self.total} {self.kind} records in {where} ({reasons}); "
            f"first {len(self.examples)}:"
        ]
        lines += [f"  {e}" for e in self.examples]
        return "\n".join(lines)


def load_records(
    kind: str,
    source: SourceLike,
    split: str = "train",
    *,
    skip_invalid: bool = False,
    streaming: bool = False,
    return_report: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset | IterableDataset | tuple[Dataset, LoadReport]:
    """Load and validate records of `kind` from `source`.

    Args:
        kind: one of `RECORD_KINDS`: ``"pretrain"``, ``"sft"``, ``"dpo"``, ``"rl"``.
        source: a ``.jsonl``/``.json``/``.parquet`` file (``.gz`` for the JSON ones), a directory of
            them, a list of those, or a Hugging Face Hub dataset name (any string that is not an
            existing path and does not look like one).
        split: the split to load from a hub dataset (local files have no splits).
        skip_invalid: drop invalid rows (counted, logged once) instead of raising.
        streaming: return a `datasets.IterableDataset` that validates lazily while iterated.
        return_report: also return a `LoadReport` (not available with ``streaming=True``).
        cache_dir: where `datasets` caches the Arrow file (default: the `datasets` cache).

    Returns:
        The `Dataset` (columns: see `minimind_hf.data.schemas`), or ``(dataset, report)``.

    Raises:
        RecordError: an invalid row (without ``skip_invalid``); says file, line and field.
        DataFileError: a file unreadable from some point on (a gzip file that is not gzip, truncated or
            corrupt); names the file and the last line read; raised even with ``skip_invalid``.
        FileNotFoundError: a local-looking path that does not exist, or an empty directory.
        ValueError: unknown `kind`; no rows at all; or every row invalid with ``skip_invalid``.
    """
    check_kind(kind)
    if streaming and return_report:
        raise ValueError("return_report=True needs streaming=False: counts are only known after a full pass")
    sources = resolve_sources(source, split=split, streaming=streaming)
    report = LoadReport(kind=kind, sources=[s.name for s in sources])
    features = RECORD_FEATURES[kind]

    if streaming:

        def stream() -> Iterator[dict]:
            pass_report = LoadReport(kind=kind, sources=report.sources)  # fresh counts for every pass
            yield from _generate(kind, sources, skip_invalid, pass_report)
            _log_skips(pass_report)

        return IterableDataset.from_generator(stream, features=features)

    try:
        dataset = Dataset.from_generator(
            lambda: _generate(kind, sources, skip_invalid, report),
            features=features,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            fingerprint=_fingerprint(kind, sources, skip_invalid),
        )
    except DatasetGenerationError as e:
        # `datasets` wraps whatever the generator raised; surface our own, precise error instead.
        if isinstance(e.__cause__, (RecordError, ValueError, OSError)):
            raise e.__cause__ from None
        raise
    _sync_report(dataset, report)
    _log_skips(report)
    return (dataset, report) if return_report else dataset


def _generate(kind: str, sources: list[Source], skip_invalid: bool, report: LoadReport) -> Iterator[dict]:
    """Validated rows of every source; fills `report`. Raises if nothing valid was found."""
    for src in sources:
        for index, unit, value in iter_rows(src):
            report.total += 1
            try:
                if isinstance(value, RecordError):
                    raise value
                record = validate_record(kind, value)
            except RecordError as err:
                err.locate(src.name, index, unit)
                if not skip_invalid:
                    if hasattr(err, "add_note"):
                        err.add_note(_SKIP_HINT)
                    raise
                report.add_skip(err)
                continue
            report.kept += 1
            yield record
    names = ", ".join(report.sources)
    if report.total == 0:
        raise ValueError(f"{names}: no records found (the input is empty or has only blank lines)")
    if report.kept == 0:
        raise ValueError(
            f"{names}: none of the {report.total} rows is a valid {kind!r} record. "
            f"{report.summary()}\nIs kind={kind!r} right for this data?"
        )


def _fingerprint(kind: str, sources: list[Source], skip_invalid: bool) -> str:
    h = hashlib.sha256(
        json.dumps(
            [kind, skip_invalid, _CODE_VERSION, [s.fingerprint() for s in sources]], default=str
        ).encode()
    )
    return h.hexdigest()[:32]


def _code_version() -> str:
    """Hash of the validation code, so editing it invalidates cached datasets."""
    h = hashlib.sha256()
    for name in ("errors.py", "messages.py", "schemas.py", "sources.py", "records.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


_CODE_VERSION = _code_version()


def _sync_report(dataset: Dataset, report: LoadReport) -> None:
    """Store the report beside a freshly built cache, or restore it after a cache hit."""
    files = dataset.cache_files
    path = Path(files[0]["filename"]).parent / _REPORT_FILE if files else None
    if report.total:  # the generator ran: this is a fresh build
        if path is not None:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(report)), encoding="utf-8")
            os.replace(tmp, path)  # atomic, in case several processes (ranks) load at once
        return
    report.from_cache = True
    if path is not None and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        report.total, report.kept = saved["total"], saved["kept"]
        report.skipped, report.examples = saved["skipped"], saved["examples"]
    else:  # cache without its report (e.g. deleted by hand): only the size is known
        report.total = report.kept = len(dataset)


def _log_skips(report: LoadReport) -> None:
    if report.num_skipped:
        logger.warning(report.summary())
