"""recipes/sft.py end to end under accelerate: trl's SFTTrainer in 1 and 2 CPU processes with the same global
batch give the same loss curve (DDP over gloo, token counts gathered across ranks), the native backend runs
from the same YAML in 2 processes, and every output folder loads with AutoModelForCausalLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _recipe_helpers import CONFIGS, run_recipe

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

CONFIG = CONFIGS / "tiny" / "sft.yaml"
SMALL = [
    "--data",
    "demo:sft:300",
    "--max_steps",
    "4",
    "--logging_steps",
    "1",
    "--eval_strategy",
    "no",
    "--max_length",
    "128",
    "--learning_rate",
    "2e-3",
]


def trl_losses(out: Path) -> list[float]:
    state = json.loads((out / "trainer_state.json").read_text())  # written by save_final (save_state)
    return [r["loss"] for r in state["log_history"] if "loss" in r]


def assert_chat_model(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "1 + 1 = ?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert model.generate(**enc, max_new_tokens=4, do_sample=False).shape[1] > enc["input_ids"].shape[1]


def test_sft_trl_two_processes_equal_one_process(tiny_model_dir, recipe_env, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    base = [*SMALL, "--model_name_or_path", str(tiny_model_dir), "--save_strategy", "no"]
    run_recipe(
        "sft", CONFIG, *base, "--per_device_train_batch_size", "8", "--output_dir", str(one), env=recipe_env
    )
    run_recipe(
        "sft",
        CONFIG,
        *base,
        "--per_device_train_batch_size",
        "4",
        "--output_dir",
        str(two),
        env=recipe_env,
        nproc=2,
    )
    losses_one, losses_two = trl_losses(one), trl_losses(two)
    assert len(losses_one) == len(losses_two) == 4
    # the same 8 conversations per step (accelerate shards each global batch across the ranks) and the loss
    # normalised by the global label-token count: the curves agree up to float reduction order
    assert losses_two == pytest.approx(losses_one, rel=2e-3)
    assert losses_one[-1] < losses_one[0]
    assert_chat_model(two)


def test_sft_native_two_processes(tiny_model_dir, recipe_env, tmp_path):
    out = tmp_path / "native"
    proc = run_recipe(
        "sft",
        CONFIG,
        *SMALL,
        "--backend",
        "native",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--per_device_train_batch_size",
        "4",
        "--output_dir",
        str(out),
        env=recipe_env,
        nproc=2,
    )
    assert "2 process(es)" in proc.stderr  # the native loop's start line: one DDP group, not 2 lone runs
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and steps[-1]["loss"] < steps[0]["loss"]
    assert_chat_model(out)


def test_augmentation_reaches_trl_sft_rows_and_is_refused_elsewhere(tiny_model_dir, tmp_path, monkeypatch):
    """``empty_think_ratio: 0`` + ``add_system_ratio: 1``: the rows trl's SFTTrainer tokenises (through its
    per-example chat_template_kwargs) all open with a system prompt and hold no empty think block; recipes
    that do not augment their data refuse the keys."""
    from minimind_hf.recipes import common, pretrain, sft

    args = sft.parse_args(
        ["--config", str(CONFIG), "--data", "demo:sft:20", "--max_length", "256", "--add_system_ratio", "1",
         "--empty_think_ratio", "0", "--model_name_or_path", str(tiny_model_dir),
         "--output_dir", str(tmp_path / "o"), "--report_to", "none"]
    )  # fmt: skip
    recipe_args, training_args, model_args = args
    trainer, tok = common.sft_trainer(recipe_args, training_args, model_args)
    texts = [tok.decode(r["input_ids"]) for r in trainer.train_dataset]
    assert texts and all(
        t.startswith("<|im_start|>system\n") and "<think>\n\n</think>" not in t for t in texts
    )

    bad = pretrain.parse_args(
        ["--config", str(CONFIGS / "tiny" / "pretrain.yaml"), "--empty_think_ratio", "0.2",
         "--output_dir", str(tmp_path / "p")]
    )  # fmt: skip
    with pytest.raises(common.RecipeError, match="empty_think_ratio: the pretrain recipe"):
        pretrain.main(*bad)
