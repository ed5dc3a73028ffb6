"""Fixtures for the recipe tests: the subprocess environment (the tiny base model is the root conftest's
`tiny_model_dir`). The recipe runner and paths live in `_recipe_helpers`, which test modules import."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def recipe_env(tmp_path_factory) -> dict[str, str]:
    """Environment for recipe subprocesses: offline, one torch thread each, the built-in corpus cached
    once."""
    env = dict(os.environ)
    env.update(
        {
            "MINIMIND_HF_CACHE": str(tmp_path_factory.mktemp("minimind_cache")),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "WANDB_DISABLED": "true",
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env
