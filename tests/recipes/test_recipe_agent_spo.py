"""recipes/agent.py and recipes/spo.py: the tiny YAMLs run natively under accelerate (the agent's rollouts
call the calculator), and backend trl is refused with its reason."""

from __future__ import annotations

import json
import subprocess
import sys

from _recipe_helpers import CONFIGS, REPO, run_recipe

CONFIG = CONFIGS / "tiny" / "agent.yaml"


def test_agent_recipe_runs_natively(tiny_base, recipe_env, tmp_path):
    out = tmp_path / "agent"
    run_recipe(
        "agent",
        CONFIG,
        "--data",
        "demo:rl:20",
        "--max_steps",
        "2",
        "--max_completion_length",
        "16",
        "--model_name_or_path",
        str(tiny_base),
        "--output_dir",
        str(out),
        env=recipe_env,
    )
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [2] and {"turns", "tool_calls", "rewards/tool_use_reward"} <= set(
        steps[0]
    )
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_agent_recipe_refuses_trl_and_checks_the_turn_bound(tiny_base, recipe_env):
    base = [sys.executable, str(REPO / "recipes" / "agent.py"), "--config", str(CONFIG), "--dry_run", "true"]
    base += ["--model_name_or_path", str(tiny_base)]
    proc = subprocess.run(
        [*base, "--backend", "trl"], env=recipe_env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "native backend only" in proc.stderr, proc.stderr[-2000:]
    proc = subprocess.run(
        [*base, "--tools", "calculater"], env=recipe_env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "unknown ['calculater']" in proc.stderr, proc.stderr[-2000:]
    proc = subprocess.run(base, env=recipe_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = json.loads(proc.stdout)["config"]
    assert cfg["tools"] == ["calculator"] and cfg["max_turns"] == 3 and cfg["loss_type"] == "cispo"


def test_spo_recipe_runs_natively_and_refuses_trl(tiny_base, recipe_env, tmp_path):
    config = CONFIGS / "tiny" / "spo.yaml"
    out = tmp_path / "spo"
    run_recipe(
        "spo",
        config,
        "--data",
        "demo:rl:20",
        "--max_steps",
        "2",
        "--max_completion_length",
        "8",
        "--model_name_or_path",
        str(tiny_base),
        "--output_dir",
        str(out),
        env=recipe_env,
    )
    steps = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"baseline", "rho", "reward"} <= set(steps[-1]) and (out / "model.safetensors").is_file()
    cmd = [sys.executable, str(REPO / "recipes" / "spo.py"), "--config", str(config), "--backend", "trl"]
    cmd += ["--model_name_or_path", str(tiny_base), "--dry_run", "true"]
    proc = subprocess.run(cmd, env=recipe_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "trl has no SPO trainer" in proc.stderr
