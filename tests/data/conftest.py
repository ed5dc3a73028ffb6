"""Fixtures for the data tests: small files written on the fly, a private `datasets` cache, and
the real data shipped beside the repository (``../shared/data``; override with MINIMIND_SHARED_DATA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minimind_hf.data import load_records


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One `datasets` cache for the whole session, so the real files are converted once."""
    return tmp_path_factory.mktemp("records-cache")


@pytest.fixture
def write_jsonl(tmp_path):
    """Write rows (dicts, or raw strings kept verbatim) one per line; return the path."""

    def write(name: str, rows: list) -> Path:
        path = tmp_path / name
        lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_tmp(tmp_path):
    """`load_records` with a cache inside this test's tmp dir."""

    def _load(kind: str, source, **kwargs):
        kwargs.setdefault("cache_dir", tmp_path / "cache")
        return load_records(kind, source, **kwargs)

    return _load
