"""recipes/distill.py end to end on its tiny config, both backends, with a teacher (a different random model
with the student's tokenizer); the output loads and generates, the logged loss is finite; no teacher -> a
clear error naming the key."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from _recipe_helpers import CONFIGS, run_recipe

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

SMALL = [
    "--data",
    "demo:sft:200",
    "--max_steps",
    "3",
    "--logging_steps",
    "1",
    "--eval_steps",
    "3",
    "--save_steps",
    "3",
]
TRL_ONLY = ["--max_completion_length", "16"]  # trl's on-policy sampling length: refused by the native backend


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, tmp_path_factory) -> Path:
    """Same tokenizer and shape as the student, other random weights: the KL is not zero."""
    import torch

    from minimind_hf import MiniMindForCausalLM

    out = tmp_path_factory.mktemp("teacher")
    model = MiniMindForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja":
            shutil.copy2(f, out / f.name)
    return out


@pytest.mark.parametrize("backend", ["trl", "native"])
def test_distill_recipe_with_teacher(backend, recipe_env, tiny_model_dir, teacher, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "distill"
    proc = run_recipe(
        "distill",
        CONFIGS / "tiny" / "distill.yaml",
        *SMALL,
        "--model_name_or_path",
        str(tiny_model_dir),
        "--teacher_model_name_or_path",
        str(teacher),
        "--output_dir",
        str(out),
        "--backend",
        backend,
        *(TRL_ONLY if backend == "trl" else []),
        env=recipe_env,
    )
    if backend == "native":
        rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        rows = [r for r in rows if "loss" in r]
        losses = [r["loss"] for r in rows]
        assert all(r["kd"] > 0 for r in rows)  # the teacher differs from the student: a real KL term
    else:
        text = proc.stdout + proc.stderr
        losses = [float(x) for x in re.findall(r"\{'loss': '([-0-9.e+naif]+)'", text)]
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses), losses

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    student = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True)
    assert not torch.equal(model.lm_head.weight, student.lm_head.weight)  # the student trained
    ids = tokenizer("hello", return_tensors="pt").input_ids
    with torch.no_grad():
        assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]


def test_distill_without_teacher_is_a_clear_error(tiny_model_dir, tmp_path):
    """Checked before any work (in-process: parse + check only); the message names the key."""
    from minimind_hf.recipes import common, distill
    from trl import DistillationConfig

    args = common.parse_recipe(
        DistillationConfig,
        extra_dataclasses=(distill.DistillArguments,),
        argv=[
            "--config",
            str(CONFIGS / "tiny" / "distill.yaml"),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--teacher_model_name_or_path",
            "",
            "--output_dir",
            str(tmp_path / "x"),
        ],
    )
    with pytest.raises(common.RecipeError, match="teacher_model_name_or_path is required"):
        distill.main(*args)
