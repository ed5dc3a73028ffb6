"""Helpers for the recipe tests (a module with a unique name, so test files can import it directly):
paths, and `run_recipe`, which starts a recipe with ``accelerate launch`` (1 CPU process, or 2 through
``recipes/accelerate/cpu_2proc.yaml``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
CONFIGS = RECIPES / "configs"

# the built-in data each stage reads, standing in for the configs' downloaded files
STAGE_DATA = {
    "pretrain": "demo:pretrain:40",
    "sft": "demo:sft:40",
    "lora": "demo:sft:40",
    "distill": "demo:sft:40",
    "dpo": "demo:dpo:20",
    "grpo": "demo:rl:20",
    "agent": "demo:rl:20",
    "spo": "demo:rl:20",
    "rloo": "demo:rl:20",
    "ppo": "demo:rl:20",
}


def run_recipe(
    stage: str,
    config: str | Path,
    *overrides: str,
    env: dict[str, str],
    nproc: int = 1,
    timeout: int = 600,
    cwd: str | Path = REPO,
) -> subprocess.CompletedProcess:
    """``accelerate launch recipes/<stage>.py --config CONFIG --key value ...``; fails the test with the
    output tail when the process fails."""
    if nproc == 1:
        launch = [
            "--cpu",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
    else:
        launch = [
            "--config_file",
            str(RECIPES / "accelerate" / "cpu_2proc.yaml"),
            "--num_processes",
            str(nproc),
        ]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launch,
        str(RECIPES / f"{stage}.py"),
        "--config",
        str(config),
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + "\n" + proc.stderr).splitlines()[-60:])
        pytest.fail(f"recipe {stage} failed (exit {proc.returncode}):\n{' '.join(cmd)}\n{tail}")
    return proc
