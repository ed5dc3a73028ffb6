"""Fixtures for the recipe tests: the subprocess environment and a tiny base model folder. The recipe runner
and paths live in `_recipe_helpers` (test modules import it by that unique name; every test folder has a
conftest.py, so `import conftest` would be ambiguous)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def recipe_env(tmp_path_factory) -> dict[str, str]:
    """Environment for recipe subprocesses: offline, one torch thread each, the built-in corpus cached once."""
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


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny MiniMind folder (hidden 64, 2 layers, 512-token tokenizer trained on the built-in corpus), random
    weights: what a pretrain recipe would hand to SFT, in a second instead of a minute."""
    import torch

    from minimind_hf import MiniMindConfig, MiniMindForCausalLM
    from minimind_hf.data.demo_corpus import pretrain_texts, sft_conversations
    from minimind_hf.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tiny_base")
    texts = pretrain_texts(600) + [m["content"] for r in sft_conversations(300) for m in r["conversations"]]
    tokenizer = train_tokenizer(texts, vocab_size=512, show_progress=False)
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=len(tokenizer)))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
