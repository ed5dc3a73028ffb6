"""Where records come from: resolving a `source` and reading raw rows with their line/row numbers.

A source is a ``.jsonl`` / ``.json`` / ``.parquet`` file (``.jsonl.gz`` and ``.json.gz`` too), a
directory (searched recursively for those files, hidden files skipped), a list of those, a
Hugging Face Hub dataset name, or ``demo:PART[:N]`` - the package's generated corpus
(`minimind_hf.data.demo_corpus`: ``pretrain``, ``sft``, ``rl``, ``dpo``, ``heldout``; ``N`` rows, default
its standard size), written once to ``$MINIMIND_HF_CACHE/demo`` (default ``~/.cache/minimind_hf/demo``)
so recipes and tests run with no downloaded data. A string that is neither an existing path nor *looks* like
one (has a data-file extension, starts with ``.``, ``/`` or ``~``, or has more than one ``/``) is treated as
a hub name; one that looks local but does not exist raises `FileNotFoundError` instead of a
confusing hub lookup.

Rows are yielded as ``(index, unit, value)``: `unit` is ``"line"`` with a 1-based physical line
number for JSON Lines, ``"row"`` with a 0-based row index for parquet, JSON arrays and hub
datasets. A line that is not valid JSON (or nested too deeply to parse, or holding a lone UTF-16
surrogate from a ``\\ud800`` escape, which no UTF-8 writer can store) yields a `RecordError` as its
value, so the caller can count it like any other invalid record. Blank lines are skipped. A gzip file
that is not gzip, or whose stream is truncated or corrupt, raises `DataFileError` naming the file and
the last line read: nothing after the break is readable, so it is never a skippable record.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataFileError, RecordError
from .messages import iter_strings

__all__ = ["DATA_SUFFIXES", "Source", "demo_source", "iter_rows", "looks_local", "resolve_sources"]

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".jsonl.gz", ".json.gz")
# Extensions that mark a string as a (mistyped) local file rather than a hub dataset name.
_LOCAL_LOOKING = DATA_SUFFIXES + (".gz", ".csv", ".tsv", ".txt", ".arrow")
_BOM = b"\xef\xbb\xbf"
# what gzip raises on a file that is not gzip, a cut-off stream, and damaged deflate data
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
_SURROGATE = re.compile("[\ud800-\udfff]")

SourceLike = str | os.PathLike | Sequence["str | os.PathLike"]


@dataclass(frozen=True)
class Source:
    """One resolved input: a local file (`path`) or an opened hub dataset (`hub`)."""

    name: str  # how error messages name it: the path as given, or the hub dataset name
    path: Path | None = None
    hub: Any = None  # datasets.Dataset or IterableDataset

    def fingerprint(self) -> tuple:
        """What identifies this input's content for caching (changes when the file does)."""
        if self.path is not None:
            st = self.path.stat()
            return (str(self.path.resolve()), st.st_size, st.st_mtime_ns)
        return (self.name, getattr(self.hub, "_fingerprint", None))


def looks_local(text: str) -> bool:
    """Whether a string reads as a local path (a data-file extension, ``.``/``/``/``~``, several ``/``)."""
    return (
        text.lower().endswith(_LOCAL_LOOKING)
        or text.startswith((".", "/", "~", "\\"))
        or os.path.isabs(text)
        or text.count("/") > 1
        or "\\" in text
    )


def _is_data_file(path: Path) -> bool:
    return path.name.lower().endswith(DATA_SUFFIXES)


def resolve_sources(source: SourceLike, split: str = "train", streaming: bool = False) -> list[Source]:
    """Turn `source` into a list of `Source`, failing early on missing or unsupported paths."""
    if isinstance(source, (str, os.PathLike)):
        items = [source]
    elif isinstance(source, Sequence) and source:
        items = list(source)
    else:
        raise ValueError(
            f"source must be a path, a hub dataset name or a non-empty list of them, got {source!r}"
        )
    resolved: list[Source] = []
    for item in items:
        resolved.extend(_resolve_one(item, split, streaming))
    return resolved


def demo_source(spec: str) -> Path:
    """The file behind ``demo:PART[:N]``, generating it on first use (atomically:
    concurrent DDP ranks are safe)."""
    from .demo_corpus import DEFAULT_SIZES, write_demo_corpus

    _, _, rest = spec.partition(":")
    part, _, count = rest.partition(":")
    if part not in DEFAULT_SIZES or (count and not count.isdigit()):
        raise ValueError(
            f"{spec!r}: expected demo:PART or demo:PART:N with PART one of "
            f"{', '.join(DEFAULT_SIZES)} and N a row count"
        )
    n = int(count) if count else DEFAULT_SIZES[part]
    cache = Path(os.environ.get("MINIMIND_HF_CACHE", Path.home() / ".cache" / "minimind_hf")).expanduser()
    # keyed by the generator's source, so editing demo_corpus.py never serves a stale file
    generator = hashlib.sha256((Path(__file__).parent / "demo_corpus.py").read_bytes()).hexdigest()[:12]
    target = cache / "demo" / generator / f"{part}-{n}.jsonl"
    if not target.is_file():
        import tempfile

        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            written = write_demo_corpus(tmp, sizes={part: n}, parts=(part,))[part]
            os.replace(written, target)
        logger.info("generated the built-in %s corpus (%d rows) at %s", part, n, target)
    return target


def _resolve_one(item: str | os.PathLike, split: str, streaming: bool) -> list[Source]:
    if not isinstance(item, (str, os.PathLike)):
        raise TypeError(f"a source must be a path or a hub dataset name, got {type(item).__name__}")
    text = os.fspath(item)
    if isinstance(item, str) and text.startswith("demo:"):
        return [Source(name=text, path=demo_source(text))]
    path = Path(text).expanduser()
    if path.is_file():
        if not _is_data_file(path):
            raise ValueError(f"{text}: unsupported file type; expected one of {', '.join(DATA_SUFFIXES)}")
        return [Source(name=text, path=path)]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and _is_data_file(p)
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise FileNotFoundError(f"{text}: directory has no {', '.join(DATA_SUFFIXES)} files")
        return [Source(name=os.path.join(text, str(p.relative_to(path))), path=p) for p in files]
    if isinstance(item, os.PathLike) or looks_local(text):
        raise FileNotFoundError(
            f"{text}: no such file or directory (looked for {path.resolve()}). Check the path; "
            "to load a Hugging Face Hub dataset, pass its name, e.g. 'owner/name'."
        )
    return [Source(name=text, hub=_load_hub(text, split, streaming))]


def _load_hub(name: str, split: str, streaming: bool) -> Any:
    import datasets  # local import: only hub sources need it here

    logger.info("%r is not a local path: loading split %r from the Hugging Face Hub", name, split)
    try:
        return datasets.load_dataset(name, split=split, streaming=streaming)
    except Exception as e:  # offline, no such dataset, not a valid repo id, no such split, ...
        detail = " ".join(str(e).split())[:300]
        raise DataFileError(
            f"{name!r} is not an existing local file or folder (relative to {os.getcwd()}), and loading it "
            f"from the Hugging Face Hub failed ({type(e).__name__}: {detail}). Check the path, "
            "or the dataset name"
        ) from e


# ------------------------------------------------------------------------------------ readers
def iter_rows(src: Source) -> Iterator[tuple[int, str, Any]]:
    """Yield ``(index, unit, record_or_RecordError)`` for every non-blank row of `src`."""
    if src.hub is not None:
        for i, row in enumerate(src.hub):
            yield i, "row", row
        return
    assert src.path is not None
    name = src.path.name.lower()
    if name.endswith(".parquet"):
        yield from _iter_parquet(src)
    elif name.endswith((".json", ".json.gz")) and _starts_with_array(src):
        yield from _iter_json_array(src)
    else:  # .jsonl, and .json files holding one object per line (common on the hub)
        yield from _iter_jsonl(src)


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _gzip_error(src: Source, err: Exception, line: int = 0) -> DataFileError:
    """One line naming the file, how far it was read and what to do."""
    if isinstance(err, gzip.BadGzipFile) and not line:
        with open(src.path, "rb") as f:
            head = f.read(8)
        plain = src.path.name[: -len(".gz")]
        return DataFileError(
            f"{src.name}: not a gzip file (it starts with {head!r}, not the gzip magic b'\\x1f\\x8b'); "
            f"if it holds plain JSON, rename it to {plain}"
        )
    where = f"after line {line}" if line else "before its first line"
    return DataFileError(
        f"{src.name}: truncated or corrupt gzip stream {where} ({err}); re-create or re-download the file"
    )


def _lines(src: Source) -> Iterator[tuple[int, bytes]]:
    """The file's physical lines, numbered from 1; a broken gzip stream raises `DataFileError`."""
    lineno = 0
    try:
        with _open(src.path) as f:
            for lineno, raw in enumerate(f, 1):
                yield lineno, raw
    except _GZIP_ERRORS as e:
        raise _gzip_error(src, e, lineno) from None


def _read(src: Source, size: int = -1) -> bytes:
    try:
        with _open(src.path) as f:
            return f.read(size)
    except _GZIP_ERRORS as e:
        raise _gzip_error(src, e) from None


def _malformed(detail: str, hint: str = "") -> RecordError:
    return RecordError(None, None, None, f"malformed JSON: {detail}{hint}", reason="malformed_json")


def _too_deep() -> RecordError:
    return _malformed(f"nested too deeply to parse (deeper than about {sys.getrecursionlimit()} levels)")


def _lone_surrogate(value: Any, field: str = "") -> RecordError | None:
    """An error for the first string holding half a UTF-16 surrogate pair (a ``\\ud800`` escape without
    its partner; a full pair decodes to one character), which UTF-8 and Arrow cannot store."""
    for where, text in iter_strings(value, field):
        found = _SURROGATE.search(text)
        if found:
            return RecordError(
                None,
                None,
                where.encode("utf-8", "backslashreplace").decode() or None,  # a key can hold one too
                f"lone surrogate {ascii(found.group())[1:-1]} at character {found.start()} (a JSON "
                "\\uXXXX escape for half of a UTF-16 pair): not encodable text; fix the escape",
                reason="lone_surrogate",
            )
    return None


def _decode(raw: bytes, hint: str = "") -> Any:
    """One JSON line as a value, or the `RecordError` saying why it is not one."""
    try:
        value = json.loads(raw)
    except UnicodeDecodeError as e:
        return _malformed(f"not valid UTF-8 ({e.reason} at byte {e.start})")
    except ValueError as e:
        detail = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        return _malformed(detail, hint)
    except RecursionError:
        return _too_deep()
    if b"\\u" in raw:  # only a \u escape can produce a surrogate (raw UTF-8 bytes for one fail above)
        return _lone_surrogate(value) or value
    return value


def _iter_jsonl(src: Source) -> Iterator[tuple[int, str, Any]]:
    json_hint = ""
    if src.path.name.lower().endswith((".json", ".json.gz")):
        json_hint = " (a .json file must hold a JSON array of records, or one record per line)"
    for lineno, raw in _lines(src):
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if raw.strip():
            yield lineno, "line", _decode(raw, json_hint)


def _starts_with_array(src: Source) -> bool:
    head = _read(src, 65536).lstrip(_BOM).lstrip()
    if not head:  # a file starting with a lot of whitespace
        head = _read(src).lstrip(_BOM).lstrip()
    return head.startswith(b"[")


def _iter_json_array(src: Source) -> Iterator[tuple[int, str, Any]]:
    data = _read(src)
    try:
        rows = json.loads(data.removeprefix(_BOM))
    except UnicodeDecodeError as e:
        yield 1, "line", _malformed(f"not valid UTF-8 ({e.reason} at byte {e.start})")
        return
    except json.JSONDecodeError as e:  # the whole array is unusable: report where parsing stopped
        yield e.lineno, "line", _malformed(f"{e.msg} at column {e.colno}")
        return
    except RecursionError:
        yield 1, "line", _too_deep()
        return
    escapes = b"\\u" in data
    for i, row in enumerate(rows):
        yield i, "row", (_lone_surrogate(row) or row) if escapes else row


def _iter_parquet(src: Source) -> Iterator[tuple[int, str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(src.path).iter_batches(batch_size=1024)
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield i, "row", row
                i += 1
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{src.name}: not a readable parquet file ({e})") from e
