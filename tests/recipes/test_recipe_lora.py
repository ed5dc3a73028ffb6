"""recipes/lora.py end to end on its tiny config, both backends. Same output layout for both: the adapter
(peft format) in output_dir, the merged model in output_dir/merged. Proves: only the adapters trained (the
merged weights are the base weights plus exactly scaling * B @ A of the saved adapter, every other weight
is the base's), the merged folder loads with AutoModelForCausalLM(trust_remote_code) and generates, its
logits equal peft's adapter model's within 1e-5, the logged loss is finite; use_peft false is a clear
error."""

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
    "demo:sft:200",
    "--max_steps",
    "4",
    "--logging_steps",
    "1",
    "--eval_steps",
    "4",
    "--save_steps",
    "4",
]


def adapter_deltas(out: Path) -> dict:
    """{base weight name: scaling * B @ A} from the saved peft adapter."""
    from safetensors.torch import load_file

    meta = json.loads((out / "adapter_config.json").read_text())
    scaling = meta["lora_alpha"] / meta["r"]
    tensors = {
        k.removeprefix("base_model.model."): v
        for k, v in load_file(out / "adapter_model.safetensors").items()
    }
    deltas = {}
    for key, a in tensors.items():
        if ".lora_A." in key:
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            deltas[key.split(".lora_A.")[0] + ".weight"] = scaling * b.float() @ a.float()
    return deltas


@pytest.mark.parametrize("backend", ["trl", "native"])
def test_lora_recipe_adapter_and_merged_model(backend, recipe_env, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "lora"
    proc = run_recipe(
        "lora",
        CONFIGS / "tiny" / "lora.yaml",
        *SMALL,
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--backend",
        backend,
        env=recipe_env,
    )
    if backend == "native":
        rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in rows if "loss" in r]
    else:
        losses = [float(x) for x in re.findall(r"\{'loss': '([-0-9.e+naif]+)'", proc.stdout + proc.stderr)]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses), losses

    # layout: adapter in output_dir (with the tokenizer), merged model in output_dir/merged
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() and not (out / "model.safetensors").exists()
    merged_dir = out / "merged"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, trust_remote_code=True).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True).eval()

    # only the adapters changed: merged = base + scaling * B @ A on the targets, base everywhere else
    deltas = adapter_deltas(out)
    targets = {k.split(".")[-2] for k in deltas}
    assert targets == {"q_proj", "o_proj"} and len(deltas) == 2 * base.config.num_hidden_layers
    assert any(d.abs().max() > 0 for d in deltas.values())  # B left zero: the adapters did train
    base_sd, merged_sd = base.state_dict(), merged.state_dict()
    assert set(base_sd) == set(merged_sd)  # a plain model: no lora_ keys left
    for name, w in base_sd.items():
        expected = w + deltas[name] if name in deltas else w
        torch.testing.assert_close(merged_sd[name], expected, atol=1e-6, rtol=0, msg=name)

    # the merged folder computes what peft's adapter model computes
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    ids = tokenizer("Hello, how are you today?", return_tensors="pt").input_ids
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True), str(out)
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-5, rtol=0)
        assert merged.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]


def test_lora_without_peft_is_a_clear_error(tiny_model_dir, tmp_path):
    """Checked before any work (in-process: parse + check only)."""
    from minimind_hf.recipes import common, lora
    from trl import SFTConfig

    args = common.parse_recipe(
        SFTConfig,
        extra_dataclasses=(lora.LoraArguments,),
        argv=[
            "--config",
            str(CONFIGS / "tiny" / "lora.yaml"),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--use_peft",
            "false",
            "--output_dir",
            str(tmp_path / "x"),
        ],
    )
    with pytest.raises(common.RecipeError, match=r"use_peft: false .*recipes/sft.py"):
        lora.main(*args)
