"""recipes/grpo.py end to end on its tiny config from the tiny base folder, with trl's GRPOTrainer and with
the native trainer (2 prompts x 4 samples per step, 8-token completions): the output loads with
AutoModelForCausalLM, rewards / loss / KL are logged and finite. A misspelt reward name is one clear error
listing the valid names (in-process, no training), for both backends."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _recipe_helpers import CONFIGS, run_recipe

CONFIG = CONFIGS / "tiny" / "grpo.yaml"
SMALL = [
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
]


def finite(rows: list[dict], *keys: str) -> None:
    for key in keys:
        values = [r[key] for r in rows if key in r]
        assert values, f"{key} never logged: {rows}"
        assert all(math.isfinite(v) for v in values), (key, values)


def loads(out: Path) -> None:
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)


@pytest.mark.slow
def test_grpo_trl(tiny_model_dir, recipe_env, tmp_path):
    out = tmp_path / "grpo_trl"
    run_recipe(
        "grpo",
        CONFIG,
        *SMALL,
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
    loads(out)
    log = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    train = [r for r in log if "loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    finite(train, "loss", "reward", "kl", "rewards/accuracy_reward/mean", "rewards/think_format_reward/mean")
    assert all(r["completions/max_length"] <= 8 for r in train)


@pytest.mark.slow
def test_grpo_native(tiny_model_dir, recipe_env, tmp_path):
    out = tmp_path / "grpo_native"
    run_recipe(
        "grpo",
        CONFIG,
        *SMALL,
        "--backend",
        "native",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        env=recipe_env,
    )
    loads(out)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    finite(train, "loss", "reward", "kl", "clip_ratio", "rewards/accuracy_reward", "completion_length")
    assert max(r["step"] for r in train) == 2
    assert all(r["completion_length"] <= 8 for r in train)
    # per_device_train_batch_size 8 completions = 2 prompts x 4 samples: 8 rows normalise each step ("grpo")
    assert all(r["items"] == 8 for r in train)


@pytest.mark.parametrize("backend", ["trl", "native"])
def test_unknown_reward_lists_the_valid_names(tiny_model_dir, tmp_path, backend):
    from minimind_hf.recipes import common, grpo

    from minimind_hf.rewards import REWARDS

    args = grpo.parse_args(
        [
            "--config",
            str(CONFIG),
            "--backend",
            backend,
            "--rewards",
            "accuracy",
            "acuracy",
            "--reward_weights",
            "1",
            "1",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(tmp_path / "never"),
        ]
    )
    with pytest.raises(common.RecipeError) as e:
        grpo.main(*args)
    message = str(e.value)
    assert "acuracy" in message and "valid:" in message
    assert all(name in message for name in REWARDS)
    assert not (tmp_path / "never").exists()


def test_bad_reward_options_and_weights(tiny_model_dir, tmp_path):
    from minimind_hf.recipes import common, grpo

    args = grpo.parse_args(
        [
            "--config",
            str(CONFIG),
            "--reward_options",
            "{think_format: {nope: 1}}",
            "--reward_weights",
            "1",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(tmp_path / "never"),
        ]
    )
    with pytest.raises(common.RecipeError) as e:
        grpo.main(*args)
    assert "nope" in str(e.value) and "think_in_prompt" in str(e.value)  # the reward's valid options
    assert "reward_weights has 1 values for 2 rewards" in str(e.value)


def test_native_batch_semantics(tiny_model_dir, recipe_env, tmp_path, monkeypatch, capsys):
    """trl counts completions per micro-step, native prompts per micro-batch: 8 completions / 4 samples = 2
    prompts; 6 x 2 accumulation steps / 4 samples = 3 prompts in one native micro-batch (same step)."""
    from minimind_hf.recipes import grpo

    monkeypatch.setenv("MINIMIND_HF_CACHE", recipe_env["MINIMIND_HF_CACHE"])
    shown = []
    for per_device, accum in ((8, 2), (6, 2)):
        args = grpo.parse_args(
            [
                "--config",
                str(CONFIG),
                "--backend",
                "native",
                "--dry_run",
                "true",
                "--data",
                "demo:rl:16",
                "--num_generations",
                "4",
                "--per_device_train_batch_size",
                str(per_device),
                "--gradient_accumulation_steps",
                str(accum),
                "--model_name_or_path",
                str(tiny_model_dir),
                "--output_dir",
                str(tmp_path / "never"),
            ]
        )
        grpo.main(*args)
        shown.append(json.loads(capsys.readouterr().out)["config"])
    assert (shown[0]["batch_size"], shown[0]["grad_accum_steps"], shown[0]["num_generations"]) == (2, 2, 4)
    assert (shown[1]["batch_size"], shown[1]["grad_accum_steps"]) == (3, 1)
    cfg = shown[0]
    assert (
        cfg["max_new_tokens"],
        cfg["beta"],
        cfg["loss_type"],
        cfg["epsilon_low"],
        cfg["epsilon_high"],
    ) == (32, 0.1, "grpo", 0.2, 0.2)
    assert cfg["rewards"] == ["accuracy", "think_format"] and cfg["reward_weights"] == [1.0, 0.5]
    assert cfg["kl_ratio_correction"] is False and cfg["max_prompt_length"] == 512  # the native default
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("backend", ["trl", "native"])
def test_output_dir_equal_to_the_model_is_refused(tiny_model_dir, backend):
    """Fine-tuning into the folder being fine-tuned would overwrite the input: refused before any work."""
    from minimind_hf.recipes import common, grpo

    args = grpo.parse_args(
        ["--config", str(CONFIG), "--backend", backend, "--model_name_or_path", str(tiny_model_dir),
         "--output_dir", str(tiny_model_dir)]
    )  # fmt: skip
    with pytest.raises(common.RecipeError, match="would overwrite its input"):
        grpo.main(*args)


def test_trl_prompts_with_thinking_ratio_are_rendered_per_record(tiny_model_dir):
    """Under trl (which renders every prompt with one chat_template_kwargs) thinking_ratio renders each prompt
    to text, drawn open or closed once per record from the seed, exactly as the chat template renders it."""
    from datasets import Dataset
    from minimind_hf.recipes.rl_shared import trl_prompts
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"q{i}"}], "gt": str(i)} for i in range(40)]
    )
    out = trl_prompts(records, tok, False, thinking_ratio=0.5, seed=1)
    opened = 0
    for i, row in enumerate(out):
        kwargs = dict(tokenize=False, add_generation_prompt=True)
        msgs = records[i]["prompt"]
        closed, open_ = (tok.apply_chat_template(msgs, open_thinking=f, **kwargs) for f in (False, True))
        assert row["prompt"] in (closed, open_) and row["gt"] == str(i)
        opened += row["prompt"] == open_
    assert 10 <= opened <= 30
    assert [r["prompt"] for r in trl_prompts(records, tok, False, 0.5, seed=1)] == out["prompt"]  # same seed
    assert trl_prompts(records, tok, False)[0]["prompt"] == records[0]["prompt"]  # unset: conversational


def test_thinking_ratio_problems_are_refused_before_work(tiny_model_dir, tmp_path):
    from minimind_hf.recipes import agent, common, grpo

    def refused(module, config, *flags) -> str:
        args = ["--config", str(config), *flags, "--model_name_or_path", str(tiny_model_dir)]
        with pytest.raises(common.RecipeError) as e:
            module.main(*module.parse_args([*args, "--output_dir", str(tmp_path / "never")]))
        return str(e.value)

    for backend in ("trl", "native"):
        assert "thinking_ratio must be in [0, 1]" in refused(
            grpo, CONFIG, "--backend", backend, "--thinking_ratio", "2"
        )
    both = refused(grpo, CONFIG, "--thinking_ratio", "0.5", "--open_thinking", "true")
    assert "open_thinking: true and thinking_ratio both set" in both
    assert "thinking_ratio" in refused(
        agent, CONFIGS / "tiny" / "agent.yaml", "--backend", "trl", "--thinking_ratio", "0.5"
    )
    assert not (tmp_path / "never").exists()
