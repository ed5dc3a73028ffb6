"""Fixtures shared by every test folder: where the real data handed to the project lives."""

from pathlib import Path

import pytest
from _shared import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set MINIMIND_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread was measured 30-100x faster than two
    threads fighting other processes for the cores. Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
