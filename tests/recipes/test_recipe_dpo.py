"""recipes/dpo.py end to end on its tiny config from the tiny base folder: trl's DPOTrainer in 2 CPU processes
(DDP over gloo) and the native trainer in one; both save a folder that loads with AutoModelForCausalLM and log
finite DPO losses / rewards (trl: trainer_state.json log_history, native: train_log.jsonl)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _recipe_helpers import CONFIGS, run_recipe

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

CONFIG = CONFIGS / "tiny" / "dpo.yaml"
SMALL = [
    "--data",
    "demo:dpo:48",
    "--max_steps",
    "2",
    "--logging_steps",
    "1",
    "--eval_steps",
    "2",
    "--save_steps",
    "2",
    "--per_device_train_batch_size",
    "2",
    "--max_length",
    "128",
]  # the native backend cuts prompts to max_length // 2 = 64 (max_prompt_length is native only)


def trl_log(out: Path) -> list[dict]:
    """log_history of the last checkpoint's trainer_state.json."""
    states = sorted(
        out.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])
    )
    assert states, f"no trainer_state.json under {out}"
    return json.loads(states[-1].read_text())["log_history"]


def native_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def assert_finite(rows: list[dict], *keys: str) -> None:
    for key in keys:
        values = [r[key] for r in rows if key in r]
        assert values, f"{key} never logged: {rows}"
        assert all(math.isfinite(v) for v in values), (key, values)


def assert_loads(out: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_dpo_trl_two_processes(tiny_model_dir, recipe_env, tmp_path):
    out = tmp_path / "dpo_trl"
    proc = run_recipe(
        "dpo",
        CONFIG,
        *SMALL,
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        env=recipe_env,
        nproc=2,
    )
    assert_loads(out)
    log = trl_log(out)
    train = [r for r in log if "loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    assert_finite(train, "loss", "rewards/margins", "rewards/accuracies", "logps/chosen")
    assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the first step
    assert_finite(log, "eval_loss")
    # two processes: one RNG state per rank in the checkpoint
    assert len(list(out.glob("checkpoint-2/rng_state_*.pth"))) == 2, proc.stdout[-2000:]


def test_dpo_native(tiny_model_dir, recipe_env, tmp_path):
    out = tmp_path / "dpo_native"
    run_recipe(
        "dpo",
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
    assert_loads(out)
    log = native_log(out)
    train = [r for r in log if "loss" in r]
    assert_finite(train, "loss", "rewards/margins", "rewards/accuracies", "grad_norm")
    assert_finite(log, "eval/loss")
    assert max(r["step"] for r in train) == 2


def test_empty_think_ratio_reaches_trl_dpo_rows(tiny_model_dir, tmp_path, monkeypatch):
    """``empty_think_ratio: 0``: trl's DPOTrainer tokenises every prompt without the empty think block (its
    per-example chat_template_kwargs), and the answers are unchanged."""
    from minimind_hf.recipes import common, dpo

    captured = {}
    monkeypatch.setattr(common, "train_and_save", lambda trainer, *a, **k: captured.setdefault("t", trainer))
    args = dpo.parse_args(
        ["--config", str(CONFIG), "--data", "demo:dpo:8", "--max_length", "128", "--empty_think_ratio", "0",
         "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"),
         "--report_to", "none"]
    )  # fmt: skip
    dpo.main(*args)
    trainer = captured["t"]
    tok = trainer.processing_class
    rows = list(trainer.train_dataset)
    assert rows
    for row in rows:
        prompt = tok.decode(row["prompt_ids"])
        assert prompt.endswith("<|im_start|>assistant\n") and "<think>\n\n</think>" not in prompt, prompt[
            -60:
        ]
