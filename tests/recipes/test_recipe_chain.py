"""The tiny configs chain by themselves: pretrain -> sft -> dpo -> grpo, each stage reading the previous
stage's output folder from the path written in its YAML (runs/tiny/...), alternating the backends so that
each library reads the other's folders. Only step counts and data sizes are overridden."""

from __future__ import annotations

import json

import pytest
import torch
from _recipe_helpers import CONFIGS, run_recipe

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

SHORT = {
    "pretrain": ["--data", "demo:pretrain:400", "--max_steps", "4"],
    "sft": ["--data", "demo:sft:200", "--max_steps", "3", "--eval_strategy", "no", "--save_strategy", "no"],
    "dpo": ["--data", "demo:dpo:40", "--max_steps", "2", "--eval_ratio", "0"],
    "grpo": ["--data", "demo:rl:20", "--max_steps", "2", "--max_completion_length", "8"],
}
BACKENDS = {"pretrain": "native", "sft": "trl", "dpo": "native", "grpo": "trl"}


def test_pretrain_sft_dpo_grpo_chain_from_the_tiny_configs(tmp_path, recipe_env):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for stage in ("pretrain", "sft", "dpo", "grpo"):
        run_recipe(
            stage,
            CONFIGS / "tiny" / f"{stage}.yaml",
            "--backend",
            BACKENDS[stage],
            *SHORT[stage],
            env=recipe_env,
            cwd=tmp_path,
        )
        out = tmp_path / "runs" / "tiny" / stage
        config = json.loads((out / "config.json").read_text())
        assert config["model_type"] == "minimind" and "AutoModelForCausalLM" in config["auto_map"], stage
        assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file(), stage
    final = tmp_path / "runs" / "tiny" / "grpo"
    model = AutoModelForCausalLM.from_pretrained(final, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(final)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "3 + 4 = ?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        new = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert new.shape[1] > ids["input_ids"].shape[1]
    # every stage trained from the one before: the vocabulary is the pretrain stage's tokenizer throughout
    assert len(tok) == len(AutoTokenizer.from_pretrained(tmp_path / "runs" / "tiny" / "pretrain"))
