"""Launch configs are honoured or refused (never a silent fallback), and ``use_peft`` trains adapters under
trl.

- an FSDP (or DeepSpeed) accelerate launch on a machine without CUDA exits non-zero naming what it cannot do,
  instead of accelerate quietly running plain DDP on the CPU;
- ``recipes/sft.py --use_peft true --lora_r 4`` (trl) trains LoRA adapters only, as trl's own scripts do, and
  the adapter records its base model's absolute path.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from _recipe_helpers import CONFIGS, RECIPES, REPO, run_recipe

pytestmark = pytest.mark.slow  # runs recipes in subprocesses

SMALL = ["--data", "demo:sft:200", "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no"]
SMALL += ["--max_length", "128"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.parametrize("backend", ["trl", "native"])
def test_fsdp_launch_without_cuda_is_an_error(backend, tiny_model_dir, recipe_env, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(RECIPES / "accelerate" / "fsdp.yaml"),
    ]
    cmd += ["--num_processes", "2", "--main_process_port", "29541", str(RECIPES / "sft.py")]
    cmd += ["--config", str(CONFIGS / "tiny" / "sft.yaml"), *SMALL, "--backend", backend]
    cmd += ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=recipe_env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "launched with FSDP" in proc.stderr and "no CUDA GPU" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_sft_use_peft_trains_adapters_under_trl(tiny_model_dir, recipe_env, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "peft"
    peft = [
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    ]
    run_recipe(
        "sft",
        CONFIGS / "tiny" / "sft.yaml",
        *SMALL,
        *peft,
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        env=recipe_env,
    )
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["r"] == 4 and sorted(meta["target_modules"]) == ["q_proj", "v_proj"]
    assert meta["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert not (out / "model.safetensors").exists(), "a full model was saved: use_peft was ignored"
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    b_weights = [v for k, v in adapter.items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in b_weights), "lora_B stayed zero: the adapters did not train"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        plain = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, out).eval()(ids).logits  # loads by the recorded absolute path
    assert not torch.allclose(plain, tuned), "the adapter does not change the model"
