"""Read tokenizer-training text from files or in-memory strings.

Supported files:

* ``.jsonl``: one JSON object per line, with a ``"text"`` field (pretrain format) or a
  ``"conversations"`` list whose message ``content`` (and ``reasoning_content``) are joined (SFT format);
* ``.json``: a JSON list of strings or of such objects;
* anything else (``.txt``, ...): read line-wise, one text per non-empty line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
_FILE_SUFFIXES = (".jsonl", ".json", ".txt")


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
    """Whether ``items`` (the ``texts_or_files`` argument) names files rather than being texts.

    A single ``str``/``PathLike`` is one file. A list is a list of files when every item is a
    ``PathLike`` or a one-line string ending in ``.jsonl``/``.json``/``.txt``.
    """
    if isinstance(items, (str, os.PathLike)):
        return True
    if not isinstance(items, (list, tuple)) or not items:
        return False
    return all(
        isinstance(x, os.PathLike)
        or (isinstance(x, str) and "\n" not in x and x.lower().endswith(_FILE_SUFFIXES))
        for x in items
    )


def check_files(paths: Iterable[PathLike]) -> list[Path]:
    """Resolve ``paths`` and fail early, naming the file, if one is missing or unreadable."""
    checked = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise ValueError(f"tokenizer training file not found: {path}")
        if not path.is_file():
            raise ValueError(f"tokenizer training data is not a regular file: {path}")
        try:
            with path.open("rb") as fh:
                fh.read(1)
        except OSError as err:
            raise ValueError(f"cannot read tokenizer training file {path}: {err.strerror or err}") from err
        checked.append(path)
    if not checked:
        raise ValueError("no tokenizer training files given")
    return checked


def _load_json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot parse JSON file {path}: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of texts or records, got {type(data).__name__}")
    return data


def count_records(path: Path) -> int:
    """Number of records ``iter_file_texts(path)`` will look at (for the progress bar)."""
    if path.suffix.lower() == ".json":
        return len(_load_json_list(path))
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def iter_file_texts(path: Path) -> Iterator[str]:
    """Yield the texts of one file (see the module docstring for formats)."""
    suffix = path.suffix.lower()
    skipped = 0
    if suffix == ".json":
        for record in _load_json_list(path):
            text = record_text(record)
            if text:
                yield text
            else:
                skipped += 1
    else:
        try:
            with path.open("r", encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    if suffix != ".jsonl":
                        yield line.rstrip("\r\n")
                        continue
                    try:
                        text = record_text(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{lineno}: invalid JSON line: {err}") from err
                    if text:
                        yield text
                    else:
                        skipped += 1
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not valid UTF-8 text: {err}") from err
    if skipped:
        logger.warning("%s: skipped %d record(s) without a 'text' or 'conversations' field", path, skipped)


def iter_files_texts(paths: Iterable[Path]) -> Iterator[str]:
    """Yield the texts of several files, in order."""
    for path in paths:
        logger.info("reading %s", path)
        yield from iter_file_texts(path)
