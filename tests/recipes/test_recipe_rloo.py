"""recipes/rloo.py end to end (trl's RLOOTrainer) on its tiny config from the tiny base folder: the output
loads with AutoModelForCausalLM and the logged loss / reward / KL are finite. ``backend: native`` is refused
with a message pointing to grpo.py / ppo.py (in-process, no training)."""

from __future__ import annotations

import json
import math

import pytest
from _recipe_helpers import CONFIGS, run_recipe

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

CONFIG = CONFIGS / "tiny" / "rloo.yaml"


def test_rloo_trl(tiny_model_dir, recipe_env, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "rloo"
    run_recipe(
        "rloo",
        CONFIG,
        "--data",
        "demo:rl:16",
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--max_completion_length",
        "8",
        "--num_generations",
        "4",
        "--per_device_train_batch_size",
        "8",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        env=recipe_env,
    )
    AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    log = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    train = [r for r in log if "loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    for key in ("loss", "reward", "kl", "rewards/accuracy_reward/mean"):
        assert all(math.isfinite(r[key]) for r in train), key


def test_rloo_native_is_refused(tiny_model_dir, tmp_path):
    from minimind_hf.recipes import common, rloo

    args = rloo.parse_args(
        [
            "--config",
            str(CONFIG),
            "--backend",
            "native",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(tmp_path / "never"),
        ]
    )
    with pytest.raises(common.RecipeError) as e:
        rloo.main(*args)
    message = str(e.value)
    assert "no native RLOO" in message and "recipes/grpo.py" in message and "recipes/ppo.py" in message
    assert not (tmp_path / "never").exists()
