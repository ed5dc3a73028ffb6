"""Failures as one line on stderr, for every `minimind-hf` entry point.

Configuration and data errors are already specific (`ConfigError`, `RecordError` name the key, file, line
and field); this module turns what is left (a full disk, Ctrl-C, a NaN loss, out of memory, a damaged
checkpoint, and anything unforeseen) into one line that says what happened and what to do next, with an exit
status: 2 for input the user can fix, 1 for a failure at run time, 130 for an interrupt. ``-v`` /
``--verbose`` (or ``MINIMIND_HF_VERBOSE=1``) re-raises instead, so the traceback is there when it is wanted.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Callable

__all__ = ["describe_failure", "run_guarded", "verbose_requested"]

_TRACEBACK_HINT = "rerun with -v (or MINIMIND_HF_VERBOSE=1) for the traceback"
# how a full disk reads inside other libraries' errors: safetensors' Rust IoError, torch's stream writer
_DISK_FULL = re.compile(r"No space left on device|StorageFull|os error 28|code: 28\b")


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("MINIMIND_HF_VERBOSE", "") not in ("", "0")


def run_guarded(func: Callable[[], int | None], verbose: bool = False) -> int:
    """Run `func`; return its exit status, or print its failure as one line and return that status."""
    try:
        return func() or 0
    except SystemExit:
        raise
    except BaseException as err:
        if verbose_requested(verbose):
            raise
        message, status = describe_failure(err)
        logging.shutdown()  # flush what was logged before the error line
        print(message, file=sys.stderr)
        return status


def describe_failure(err: BaseException) -> tuple[str, int]:
    """(one-line message, exit status) for `err`."""
    from .data import RecordError
    from .native.checkpoint import CheckpointError
    from .native.config import ConfigError
    from .native.interrupt import TrainingInterrupted

    if isinstance(err, TrainingInterrupted):
        return f"stopped: {err}", 130
    if isinstance(err, KeyboardInterrupt):
        return (
            "interrupted: nothing was saved after the last checkpoint (if any); "
            "run the same command to resume",
            130,
        )
    if isinstance(err, RecordError):
        return f"error: invalid data: {err}", 2
    if isinstance(err, ConfigError):
        return f"error: {err}", 2
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" ({err.filename})" if err.filename else ""
        return f"error: no space left on device{where}: {err.strerror or err}", 1
    if _DISK_FULL.search(str(err)):  # safetensors / torch writers report a full disk in their own exceptions
        return (
            f"error: no space left on device ({type(err).__name__}: {_one_line(err)[:200]}); free some space "
            "or write elsewhere, then run the same command (training resumes from its last "
            "complete checkpoint)",
            1,
        )
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"error: {err.strerror}{where}", 1
    if isinstance(err, MemoryError):
        return "error: out of memory: lower the batch size or the sequence length", 1
    if isinstance(err, FloatingPointError):
        return f"error: {err}", 1
    if isinstance(err, CheckpointError):
        return f"error: {err}", 1
    if isinstance(err, (ValueError, FileNotFoundError)):
        return f"error: {_one_line(err)}", 2
    return (
        f"error: unexpected {type(err).__name__}: {_one_line(err)} ({_TRACEBACK_HINT}, and please report it)",
        1,
    )


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 600 else text[:600] + " ..."
