"""recipes/pretrain.py end to end on its tiny config, both backends: a new model and (trl) a tokenizer trained
on the training text; the output folder has the tokenizer, loads with AutoModelForCausalLM and generates, and
the logged loss is finite and falls."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from _recipe_helpers import CONFIGS, run_recipe

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

SMALL = [
    "--data",
    "demo:pretrain:300",
    "--max_steps",
    "4",
    "--logging_steps",
    "1",
    "--eval_steps",
    "4",
    "--save_steps",
    "4",
]


def logged_losses(proc, out: Path, backend: str) -> list[float]:
    if backend == "native":
        rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]
    return [float(x) for x in re.findall(r"\{'loss': '([-0-9.e+naif]+)'", proc.stdout + proc.stderr)]


def check_generates(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert len(tokenizer) <= model.config.vocab_size
    ids = tokenizer("The weather today", return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > ids.shape[1]


@pytest.mark.parametrize("backend", ["trl", "native"])
def test_pretrain_recipe_trains_tokenizer_and_model(backend, recipe_env, tmp_path):
    out = tmp_path / "pretrain"
    proc = run_recipe(
        "pretrain",
        CONFIGS / "tiny" / "pretrain.yaml",
        *SMALL,
        "--output_dir",
        str(out),
        "--backend",
        backend,
        env=recipe_env,
    )
    # no tokenizer and no model in the config: a tokenizer of vocab_size tokens was trained and saved with the
    # model
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(out)) == 800
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 800
    check_generates(out)
    losses = logged_losses(proc, out, backend)
    assert len(losses) == 4, losses
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
