"""Training data: validated records of four kinds (pretrain, sft, dpo, rl) as `datasets.Dataset`.

`load_records(kind, source)` reads jsonl/json/parquet files, directories or hub datasets, checks every
row and returns uniform columns (see `minimind_hf.data.schemas` for the accepted inputs and output
schema of each kind). Invalid rows raise `RecordError` with file, line and field, or are skipped and
counted with ``skip_invalid=True``; a file unreadable past some point (a broken gzip stream) raises
`DataFileError`. `validate_record(kind, record)` checks a single record.
"""

from .errors import DataFileError, RecordError
from .records import LoadReport, load_records
from .schemas import RECORD_FEATURES, RECORD_KINDS, validate_record

__all__ = [
    "RECORD_FEATURES",
    "RECORD_KINDS",
    "DataFileError",
    "LoadReport",
    "RecordError",
    "load_records",
    "validate_record",
]
