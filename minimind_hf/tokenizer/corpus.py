"""Read tokenizer-training text from data sources or in-memory strings.

Sources are what every trainer reads (`minimind_hf.data.sources`): ``.jsonl`` / ``.json`` / ``.parquet`` files
(also gzipped), folders of them, ``demo:PART[:N]`` and Hugging Face Hub dataset names. Each record gives its
``"text"`` (pretrain format) or the ``content`` (and ``reasoning_content``) of its ``"conversations"`` (SFT
format); a JSON array may also hold plain strings. ``.txt`` files are read line-wise, one text per non-empty
line. A path that does not exist, a folder without data files or an unsupported file type is an error naming
it (never read as literal text); records without text are skipped, counted and logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..data.errors import RecordError
from ..data.sources import iter_rows, looks_local, resolve_sources

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


def record_text(record: Any) -> str | None:
    """Text of one JSON record (str, ``{"text": ...}`` or ``{"conversations": [...]}``), or None."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("text"), str):
        return record["text"]
    conversations = record.get("conversations")
    if isinstance(conversations, list):
        parts: list[str] = []
        for message in conversations:
            if not isinstance(message, dict):
                continue
            # Reasoning is text the model must tokenize well too, so it is part of the corpus.
            for key in ("reasoning_content", "content"):
                if isinstance(message.get(key), str) and message[key]:
                    parts.append(message[key])
        return "\n".join(parts) if parts else None
    return None


def looks_like_files(items: Any) -> bool:
    """Whether ``items`` (the ``texts_or_files`` argument) names data sources rather than being texts.

    A single ``str``/``PathLike`` is one source. A list is a list of sources when every item is a
    ``PathLike``, an existing path, ``demo:...``, or a one-line string that reads as a path
    (`minimind_hf.data.sources.looks_local`: a data-file extension such as ``.jsonl`` or ``.txt``, a leading
    ``.``/``/``/``~``; or a trailing ``/``). The command line never guesses:
    its ``--data`` items are always sources."""
    if isinstance(items, (str, os.PathLike)):
        return True
    if not isinstance(items, (list, tuple)) or not items:
        return False
    return all(_names_a_source(x) for x in items)


def _names_a_source(x: Any) -> bool:
    if isinstance(x, os.PathLike):
        return True
    if not isinstance(x, str) or "\n" in x:
        return False
    return (
        x.startswith("demo:")
        or x.endswith(("/", os.sep))
        or looks_local(x)
        or os.path.exists(os.path.expanduser(x))
    )


def iter_source_texts(sources: Iterable[PathLike]) -> Iterator[str]:
    """The texts of `sources` in order (see the module docstring). Every source is resolved before the first
    text is read, so a missing path fails at once; a bad line is an error naming the file and line."""
    items = list(sources)
    if not items:
        raise ValueError("no tokenizer training data given")
    resolved: list = []
    for item in items:
        if not str(item).startswith("demo:") and os.fspath(item).lower().endswith(".txt"):
            path = Path(item).expanduser()
            if not path.is_file():
                raise ValueError(f"tokenizer training data: {item}: no such file")
            resolved.append(path)
            continue
        try:
            resolved += resolve_sources(item)
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"tokenizer training data: {err}{_txt_hint(item)}") from None
    return _texts(resolved)


def _txt_hint(item: PathLike) -> str:
    """Folders are searched for data files only; say so when the folder holds .txt files."""
    path = Path(item).expanduser()
    if path.is_dir() and any(path.rglob("*.txt")):
        return " (it has .txt files: a folder is searched for data files only, so name each .txt file)"
    return ""


def _texts(resolved: list) -> Iterator[str]:
    found = 0
    for src in resolved:
        if isinstance(src, Path):
            for text in _iter_txt(src):
                found += 1
                yield text
            continue
        logger.info("reading %s", src.name)
        skipped = 0
        for index, unit, value in iter_rows(src):
            if isinstance(value, RecordError):  # a line that is not JSON, named by file and line
                raise ValueError(str(value.locate(src.name, index, unit))) from None
            text = record_text(value)
            if text:
                found += 1
                yield text
            else:
                skipped += 1
        if skipped:
            logger.warning(
                "%s: skipped %d record(s) without a 'text' or 'conversations' field", src.name, skipped
            )
    if not found:
        raise ValueError(
            f"no text in {', '.join(str(getattr(s, 'name', s)) for s in resolved)}: records need a 'text' "
            "string or a 'conversations' list"
        )


def _iter_txt(path: Path) -> Iterator[str]:
    logger.info("reading %s", path)
    try:
        with path.open("r", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 text: {err}") from err
