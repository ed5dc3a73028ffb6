"""Fixtures for the serving tests (built once per session): the overfit tiny chat model's folder and the
model + tokenizer loaded from it. What they are built from lives in `_serve_helpers`."""

from __future__ import annotations

from pathlib import Path

import pytest
from _serve_helpers import build_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("serve") / "tiny-chat")


@pytest.fixture(scope="session")
def model_and_tokenizer(model_dir):
    from minimind_hf.serve.chat import load_model

    return load_model(model_dir, dtype="float32")  # compared exactly with its own fp32 forward
