"""`RecordError`: one invalid training record, located by file, line (or row) and field.

A validator raises it without a location (it only sees the record); the loader then calls
`RecordError.locate` with the file and line it read the record from, so the message reads like a
compiler error::

    sft.jsonl:17: conversations[2].role: unknown role 'bot' (expected one of system, user, assistant, tool)

Each error also carries a short machine-readable `reason` (e.g. ``"unknown_role"``) that
`load_records(..., skip_invalid=True)` counts skipped records by.

`DataFileError` is the other kind: a whole file that cannot be read (e.g. a truncated gzip stream), so
no record after the break can be trusted and ``skip_invalid`` does not apply.
"""

from __future__ import annotations

__all__ = ["DataFileError", "RecordError"]


class RecordError(ValueError):
    """An invalid record.

    Attributes:
        file: the file (or hub dataset name) the record came from; ``None`` if unknown.
        line: 1-based physical line for JSON Lines files, 0-based row index for parquet files, JSON
            arrays and hub datasets (see `unit`); ``None`` if unknown.
        field: path of the offending field, e.g. ``"conversations[2].role"``; ``None`` for the
            record as a whole (e.g. malformed JSON).
        message: what is wrong and, where possible, what to do about it.
        reason: short category used to count skipped records, e.g. ``"missing_field"``.
        unit: ``"line"`` or ``"row"``: how to read `line`.
    """

    def __init__(
        self,
        file: str | None,
        line: int | None,
        field: str | None,
        message: str,
        *,
        reason: str = "invalid",
        unit: str = "line",
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        self.reason = reason
        self.unit = unit
        super().__init__(str(self))

    def locate(self, file: str | None, line: int | None, unit: str = "line") -> RecordError:
        """Fill in where the record came from (keeps a location that is already set) and return self."""
        if self.file is None:
            self.file = file
        if self.line is None:
            self.line, self.unit = line, unit
        self.args = (str(self),)
        return self

    @property
    def location(self) -> str:
        """``file:17`` for lines, ``file:row 17`` for rows, ``""`` if unknown."""
        where = ""
        if self.line is not None:
            where = str(self.line) if self.unit == "line" else f"row {self.line}"
        if self.file is not None:
            return f"{self.file}:{where}" if where else str(self.file)
        return f"{self.unit} {self.line}" if self.line is not None else ""

    def __str__(self) -> str:
        parts = [p for p in (self.location, self.field) if p]
        return ": ".join([*parts, self.message])

    def __reduce__(self):  # keep the attributes when pickled (e.g. across dataloader workers)
        return (_rebuild, (self.file, self.line, self.field, self.message, self.reason, self.unit))


def _rebuild(file, line, field, message, reason, unit) -> RecordError:
    return RecordError(file, line, field, message, reason=reason, unit=unit)


class DataFileError(ValueError):
    """A data file that cannot be read past some point (a broken gzip stream, ...): not one bad record.

    A `ValueError`, so command lines print it as one line; never counted as a skip by ``skip_invalid``.
    """
