"""recipes/agent.py and recipes/spo.py: the tiny YAMLs run under accelerate -- the agent on both backends from
a model that calls the calculator, so the rollouts really run it -- and spo's backend trl is refused with its
reason."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _recipe_helpers import CONFIGS, REPO, run_recipe
from _tool_models import CALC_CONVERSATION, CALC_PROMPT, memorise

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

CONFIG = CONFIGS / "tiny" / "agent.yaml"


@pytest.fixture(scope="module")
def caller(tiny_model_dir, tmp_path_factory):
    """The tiny base overfit to answer CALC_PROMPT by calling the calculator, and 4 rl records of that
    prompt."""
    from transformers import AutoTokenizer

    from minimind_hf import MiniMindForCausalLM
    from minimind_hf.tools import get_tools, tool_schemas

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = MiniMindForCausalLM.from_pretrained(tiny_model_dir)
    memorise(model, tok, CALC_CONVERSATION, tool_schemas(get_tools(["calculator"])), steps=200)
    out = tmp_path_factory.mktemp("caller")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    data = out / "agent.jsonl"
    row = {"conversations": CALC_PROMPT, "gt": ["42"]}
    data.write_text("".join(json.dumps(row) + "\n" for _ in range(4)), encoding="utf-8")
    return out, data


@pytest.mark.parametrize("backend", ["native", "trl"])
def test_agent_recipe_runs_the_calculator_on_both_backends(caller, recipe_env, tmp_path, backend):
    model, data = caller
    out = tmp_path / f"agent_{backend}"
    run_recipe(
        "agent",
        CONFIG,
        "--backend",
        backend,
        "--data",
        str(data),
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--max_completion_length",
        "120",
        "--model_name_or_path",
        str(model),
        "--output_dir",
        str(out),
        env=recipe_env,
    )
    if backend == "native":
        steps = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        steps = [r for r in steps if "loss" in r]
        calls = [r["tool_calls"] for r in steps]
        coverage = [r["rewards/gt_coverage_reward"] for r in steps]
    else:
        from minimind_hf.report import read_log

        steps = [r for r in read_log(out / "trainer_state.json") if "loss" in r]
        calls = [r["tools/call_frequency"] for r in steps]
        coverage = [r["rewards/gt_coverage_reward/mean"] for r in steps]
    assert [r["step"] for r in steps] == [1, 2], steps
    assert calls[0] > 0 and coverage[0] > 0, steps  # the model called the calculator and used its answer
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert "(training_curves.png)" in (out / "report.md").read_text(encoding="utf-8")


def test_agent_recipe_checks_tools_and_the_turn_bound(tiny_model_dir, recipe_env):
    base = [sys.executable, str(REPO / "recipes" / "agent.py"), "--config", str(CONFIG), "--dry_run", "true"]
    base += ["--model_name_or_path", str(tiny_model_dir)]
    for backend in ("native", "trl"):
        proc = subprocess.run(
            [*base, "--backend", backend, "--tools", "calculater"],
            env=recipe_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and "['calculater']" in proc.stderr, proc.stderr[-2000:]
    proc = subprocess.run(
        [*base, "--backend", "trl", "--max_tool_response_tokens", "32"],
        env=recipe_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "max_tool_response_tokens" in proc.stderr, proc.stderr[-2000:]
    for backend in ("native", "trl"):  # the same YAML needs a turn bound on both
        proc = subprocess.run(
            [*base, "--backend", backend, "--max_tool_calling_iterations", "null"],
            env=recipe_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and "set max_tool_calling_iterations" in proc.stderr, proc.stderr[-2000:]
    proc = subprocess.run(base, env=recipe_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = json.loads(proc.stdout)["config"]
    assert cfg["tools"] == ["calculator"] and cfg["max_turns"] == 3 and cfg["loss_type"] == "cispo"


def test_spo_recipe_runs_natively_and_refuses_trl(tiny_model_dir, recipe_env, tmp_path):
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
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        env=recipe_env,
    )
    steps = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"baseline", "rho", "reward"} <= set(steps[-1]) and (out / "model.safetensors").is_file()
    cmd = [sys.executable, str(REPO / "recipes" / "spo.py"), "--config", str(config), "--backend", "trl"]
    cmd += ["--model_name_or_path", str(tiny_model_dir), "--dry_run", "true"]
    proc = subprocess.run(cmd, env=recipe_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "trl has no SPO trainer" in proc.stderr
