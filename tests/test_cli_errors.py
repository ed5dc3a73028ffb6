"""Every entry point's last line of defence: a failure class as one line with an exit status, the traceback
only when asked for (-v / MINIMIND_HF_VERBOSE=1)."""

from __future__ import annotations

import errno

import pytest

from minimind_hf.cli_errors import describe_failure, run_guarded


def _raise(err: BaseException):
    def f():
        raise err

    return f


@pytest.mark.parametrize(
    "err, start, status",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/ck"),
         "error: no space left on device (/data/ck)", 1),
        (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"),
         "error: no space left on device", 1),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"),
         "error: Permission denied: /root/x", 1),
        (KeyboardInterrupt(), "interrupted: ", 130),
        (MemoryError(), "error: out of memory", 1),
        (FloatingPointError("step 3: loss is nan; lower learning_rate"), "error: step 3: loss is nan", 1),
        (ValueError("bad\nvalue"), "error: bad value", 2),
        (RuntimeError("boom"), "error: unexpected RuntimeError: boom (rerun with -v", 1),
    ],
)  # fmt: skip
def test_failure_classes_are_one_line(err, start, status, capsys):
    message, code = describe_failure(err)
    assert message.startswith(start) and "\n" not in message and code == status
    assert run_guarded(_raise(err)) == status
    assert capsys.readouterr().err.strip() == message


def test_verbose_keeps_the_traceback(monkeypatch):
    with pytest.raises(RuntimeError, match="boom"):
        run_guarded(_raise(RuntimeError("boom")), verbose=True)
    monkeypatch.setenv("MINIMIND_HF_VERBOSE", "1")
    with pytest.raises(RuntimeError, match="boom"):
        run_guarded(_raise(RuntimeError("boom")))
    assert run_guarded(lambda: 3) == 3 and run_guarded(lambda: None) == 0
