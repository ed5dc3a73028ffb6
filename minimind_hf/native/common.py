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


def load_train_and_eval(kind: str, cfg: TrainConfig, limit: int | None = None) -> tuple[Any, Any]:
    """A stage's ``kind`` records from ``cfg.data`` (the first `limit`, when set) and its held-out records:
    ``cfg.eval_data`` when given, else an ``eval_ratio`` split of the data (None for ratio 0)."""
    from ..data import load_records

    records = load_records(kind, cfg.data, skip_invalid=cfg.skip_invalid)
    if limit:
        records = records.select(range(min(limit, len(records))))
    if cfg.eval_data:
        return records, load_records(kind, cfg.eval_data, skip_invalid=cfg.skip_invalid)
    return split_records(records, cfg.eval_ratio, cfg.seed)


def load_tokenizer(cfg: TrainConfig) -> Any | None:
    """The tokenizer from ``cfg.tokenizer`` or else ``cfg.model``; None if neither is set."""
    from transformers import AutoTokenizer

    source = cfg.tokenizer or cfg.model
    if source is None:
        return None
    return AutoTokenizer.from_pretrained(source)


# keyword arguments PreTrainedConfig reads besides its fields (the legacy RoPE spellings)
_CONFIG_KWARGS = frozenset({"rope_scaling", "rope_theta", "attn_implementation"})


def model_problems(cfg: TrainConfig) -> list[str]:
    """The model a run would train, checked before any data is read: ``model_overrides`` (`override_problems`)
    and the stage's sequence lengths against the model's ``max_position_embeddings``."""
    lengths = {name: getattr(cfg, name) for name in ("seq_len", "max_length") if hasattr(cfg, name)}
    if hasattr(cfg, "max_new_tokens") and hasattr(cfg, "max_prompt_length"):
        lengths["max_prompt_length + max_new_tokens"] = cfg.max_prompt_length + cfg.max_new_tokens
    problems = folder_problems(cfg.model, cfg.tokenizer)
    if cfg.model is not None:
        return problems + length_problems(lengths, folder_max_positions(cfg.model), cfg.model)
    found, config = override_problems(cfg.preset, cfg.model_overrides)
    problems += found
    if config is None:
        return problems
    return problems + length_problems(lengths, config.max_position_embeddings, f"preset {cfg.preset!r}")


# any one of these makes a folder loadable by AutoTokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def folder_problems(
    model: str | None, tokenizer: str | None, model_key: str = "model", tokenizer_key: str = "tokenizer"
) -> list[str]:
    """Local folders that exist but are not what they are given as (an empty or half-copied folder), caught
    before any data is read instead of as transformers' 'install sentencepiece' when the tokenizer loads."""
    p = []
    if model and Path(model).is_dir() and not (Path(model) / "config.json").is_file():
        p.append(
            f"{model_key}: {model!r} has no config.json, so it is not a model folder (a run's output_dir is)"
        )
    source, key = (tokenizer, tokenizer_key) if tokenizer else (model, model_key)
    if source and Path(source).is_dir() and not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
        p.append(f"{key}: {source!r} holds no tokenizer ({' / '.join(TOKENIZER_FILES)})")
    return p


def override_problems(preset: str, overrides: dict) -> tuple[list[str], MiniMindConfig | None]:
    """(problems, the config) for a new model of `preset` with `overrides`: an unknown key (a typo would be
    stored in config.json and change nothing), a wrong type, an architecture that does not hold together."""
    import dataclasses
    import difflib

    from ..configuration_minimind import PRESETS

    if preset not in PRESETS:
        return [], None  # reported with the preset check
    known = {f.name for f in dataclasses.fields(MiniMindConfig)} | _CONFIG_KWARGS
    problems = []
    for k in overrides:
        if k not in known:
            near = difflib.get_close_matches(k, sorted(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(f"model_overrides: {k!r} is not a MiniMindConfig field{hint}")
    if problems:
        return problems, None
    try:
        return [], MiniMindConfig.from_preset(preset, **overrides)
    except Exception as err:  # huggingface_hub's strict type checks, our architecture checks
        return [f"model_overrides: {' '.join(str(err).split())}"], None


def folder_max_positions(folder: str) -> int | None:
    import json

    try:
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get(
            "max_position_embeddings"
        )
    except (OSError, ValueError, AttributeError):
        return None  # a missing or broken folder is reported where the folder is checked


def length_problems(lengths: dict[str, int], limit: int | None, model: str) -> list[str]:
    """Rows longer than the model's positions: RoPE would run past what the config promises."""
    if not limit:
        return []
    return [
        f"{name} {value} exceeds max_position_embeddings {limit} of {model}: lower {name.split()[0]}"
        for name, value in lengths.items()
        if value and value > limit
    ]


def build_model(cfg: TrainConfig, tokenizer: Any) -> MiniMindForCausalLM:
    """Load ``cfg.model`` (fp32) or build a new model from ``cfg.preset`` + overrides sized to the
    tokenizer."""
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
