"""Where the real data handed to the project lives (importable from test modules and conftests)."""

import os
from pathlib import Path


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the repository (as in CI), or $MINIMIND_SHARED_DATA, or this machine's copy."""
    repo = Path(__file__).resolve().parents[1]
    candidates = [
        os.environ.get("MINIMIND_SHARED_DATA"),
        repo.parent / "shared" / "data",
        "/work/shared/data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    return None
