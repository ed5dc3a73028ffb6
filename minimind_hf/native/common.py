"""Shared set-up for the stages: seeding, loading records with clear errors, tokenizer and model."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configuration_minimind import MiniMindConfig
from ..modeling_minimind import MiniMindForCausalLM
from .loop import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["build_model", "check_data_files", "load_tokenizer", "seed_everything", "split_records"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_data_files(key: str, paths: list[str], required: bool = True) -> list[str]:
    """Config problems for a list of local data paths (hub names, which don't look like paths, pass)."""
    if required and not paths:
        return [f"{key}: no data given (a .jsonl/.json/.parquet file or folder, e.g. {key}=[train.jsonl])"]
    problems = []
    for p in paths:
        looks_local = p.startswith((".", "/", "~")) or Path(p).suffix in (
            ".jsonl",
            ".json",
            ".parquet",
            ".gz",
        )
        if looks_local and not Path(p).expanduser().exists():
            problems.append(f"{key}: no such file or folder {p!r}")
    return problems


def split_records(dataset: Any, eval_ratio: float, seed: int) -> tuple[Any, Any]:
    """(train, eval) split of a `datasets.Dataset` by record; eval is None for ratio 0."""
    if eval_ratio <= 0 or len(dataset) < 2:
        return dataset, None
    n_eval = max(1, int(round(len(dataset) * eval_ratio)))
    parts = dataset.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def load_tokenizer(cfg: TrainConfig) -> Any | None:
    """The tokenizer from ``cfg.tokenizer`` or else ``cfg.model``; None if neither is set."""
    from transformers import AutoTokenizer

    source = cfg.tokenizer or cfg.model
    if source is None:
        return None
    return AutoTokenizer.from_pretrained(source)


def build_model(cfg: TrainConfig, tokenizer: Any) -> MiniMindForCausalLM:
    """Load ``cfg.model`` (fp32) or build a new model from ``cfg.preset`` + overrides sized to the tokenizer."""
    if cfg.model is not None:
        model = MiniMindForCausalLM.from_pretrained(
            cfg.model, dtype=torch.float32, attn_implementation=cfg.attn_implementation
        )
        if cfg.model_overrides:
            logger.warning("model_overrides are ignored when starting from model=%s", cfg.model)
    else:
        overrides = dict(cfg.model_overrides)
        overrides.setdefault("vocab_size", len(tokenizer))
        overrides.setdefault("attn_implementation", cfg.attn_implementation)
        config = MiniMindConfig.from_preset(cfg.preset, **overrides)
        model = MiniMindForCausalLM(config)
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size} "
            "embeddings: use the tokenizer the model was trained with"
        )
    n = sum(p.numel() for p in model.parameters())
    logger.info("model: %.2fM parameters (%s)", n / 1e6, cfg.model or cfg.preset)
    return model
