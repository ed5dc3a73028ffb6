"""recipes/ppo.py end to end (our native PPO under accelerate) on its tiny config from the tiny base folder:
the policy folder loads with AutoModelForCausalLM, the critic is saved beside it, and the logged PPO losses,
reward and KL are finite. ``backend: trl`` is refused with a message pointing to
grpo.py / rloo.py (checked in-process, no training)."""

from __future__ import annotations

import json
import math

import pytest
from _recipe_helpers import CONFIGS, run_recipe

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

CONFIG = CONFIGS / "tiny" / "ppo.yaml"


def test_ppo_native(tiny_model_dir, recipe_env, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "ppo"
    run_recipe(
        "ppo",
        CONFIG,
        "--data",
        "demo:rl:16",
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--max_completion_length",
        "8",
        "--per_device_train_batch_size",
        "2",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        env=recipe_env,
    )
    AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert (out / "value_model.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    assert max(r["step"] for r in train) == 2
    for key in ("loss", "policy_loss", "value_loss", "kl", "reward", "grad_norm"):
        values = [r[key] for r in train if key in r]
        assert values and all(math.isfinite(v) for v in values), (key, train)


def test_ppo_trl_backend_is_refused(tiny_model_dir, tmp_path):
    """In-process (the script turns this RecipeError into ``error: ...`` on stderr and exit status 2)."""
    from minimind_hf.recipes import common, ppo

    args = ppo.parse_args(
        [
            "--config",
            str(CONFIG),
            "--backend",
            "trl",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(tmp_path / "never"),
        ]
    )
    with pytest.raises(common.RecipeError) as e:
        ppo.main(*args)
    message = str(e.value)
    assert "no PPO trainer" in message and "recipes/grpo.py" in message and "recipes/rloo.py" in message
    assert not (tmp_path / "never").exists()
