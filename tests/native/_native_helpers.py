"""Helpers for the native trainer tests (imported by test modules; not a conftest so that it never collides
with other test files in this folder).

The corpus, tokenizer and base model are the root conftest's session fixtures (``demo_files``,
``tiny_tokenizer`` / ``tiny_tokenizer_dir``, ``tiny_model_dir``, ``make_tiny_model``); the functions here take
what they need of them as arguments: stage and recipe settings for a tiny, quiet, fp32 CPU run, the CLI in a
subprocess with one torch thread (the CI machine is shared), train-log readers, and the tool-use conversation
with the (hidden 128) tiny model that learns it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _tool_models import CALC_CALL, CALC_CONVERSATION, CALC_PROMPT


def _env() -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def base_config(tokenizer_dir: Path | None, **overrides) -> dict:
    """Common keys for a tiny, quiet, CPU run with the tokenizer `tokenizer_dir` (None: the model's own)."""
    cfg = {
        "tokenizer": None if tokenizer_dir is None else str(tokenizer_dir),
        "preset": "tiny",
        "report_to": ["none"],
        "progress": False,
        "num_threads": 1,
        "seed": 0,
        # fp32 whatever the CPU (auto is bf16 where it has bf16 instructions): the tests compare exact values;
        # test_acceleration.py covers bf16
        "mixed_precision": "no",
    }
    cfg.update(overrides)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


# recipe keys (trl's vocabulary) that give the native defaults of `base_config` on a quiet CPU run
RECIPE_BASE = {
    "preset": "tiny",
    "report_to": "none",
    "disable_tqdm": True,
    "num_threads": 1,
    "seed": 0,
    "logging_steps": 1,
    "bf16": False,
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
    "adam_beta2": 0.95,
    "weight_decay": 0.01,
    "activation_checkpointing": False,
}


def recipe_config(path: Path, tokenizer_dir: Path, **fields) -> Path:
    """A recipe YAML (what `minimind-hf train STAGE --config` reads): `RECIPE_BASE` + the tokenizer in
    `tokenizer_dir` + fields."""
    import yaml

    cfg = {**RECIPE_BASE, "tokenizer": str(tokenizer_dir), **fields}
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def cli(*args: str, timeout: float = 180, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minimind_hf.cli", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def popen_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "minimind_hf.cli", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_log(output_dir: Path) -> list[dict]:
    lines = (Path(output_dir) / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def train_losses(output_dir: Path) -> list[float]:
    return [r["loss"] for r in read_log(output_dir) if "loss" in r]


def env() -> dict:
    return _env()


# a tool-use conversation and a tiny model that learns it (rollout and tool-eval tests)
TOOL_PROMPT, TOOL_CALL, TOOL_CONVERSATION = CALC_PROMPT, CALC_CALL, CALC_CONVERSATION


def tiny_lm(tokenizer, seed: int = 0):
    """A tiny MiniMind widened to hidden 128 over `tokenizer` (the tool-use model)."""
    import torch

    from minimind_hf import MiniMindConfig, MiniMindForCausalLM

    torch.manual_seed(seed)
    cfg = MiniMindConfig.from_preset(
        "tiny", vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384
    )
    return MiniMindForCausalLM(cfg)


def rl_inputs(tmp_path: Path, model, tokenizer, rows: list[dict]) -> tuple[Path, Path]:
    """(a base folder holding `model` and `tokenizer`, an rl .jsonl of `rows`) for an RL stage run."""
    base = tmp_path / "base"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    data = tmp_path / "rl.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return base, data
