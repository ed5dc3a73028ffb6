"""DDP: 2 CPU processes (gloo) give the same per-step losses and weights as 1 process with the same global
batch, on SFT rows of very different label counts (so a per-process mean would not match)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _native_helpers import env, recipe_config, train_losses
from minimind_hf.recipes import sft
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # subprocess runs of the CLI


def test_two_processes_equal_one_process(tmp_path, demo_files, tiny_tokenizer_dir, tiny_model_dir):
    common = dict(
        data=[str(demo_files["sft"])],
        model_name_or_path=str(tiny_model_dir),
        max_records=64,
        packing=False,
        assistant_only_loss=True,
        max_length=128,
        max_steps=3,
        learning_rate=3e-3,
        gradient_accumulation_steps=2,
    )
    one = tmp_path / "one"
    one_cfg = recipe_config(
        tmp_path / "one.yaml",
        tiny_tokenizer_dir,
        output_dir=str(one),
        per_device_train_batch_size=4,
        **common,
    )
    sft.main(*sft.parse_args(["--config", str(one_cfg), "--backend", "native"]))

    two = tmp_path / "two"
    cfg = recipe_config(
        tmp_path / "ddp.yaml",
        tiny_tokenizer_dir,
        output_dir=str(two),
        per_device_train_batch_size=2,
        **common,
    )
    launch_env = env()
    launch_env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes, gloo backend
    # On a machine without GPUs, `--multi_gpu` makes accelerate start the processes with torchrun; the loop's
    # Accelerator(cpu=True) then joins them into one gloo group. (`accelerate launch --cpu` alone starts one.)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
        "-m",
        "minimind_hf.cli",
        "train",
        "sft",
        "--config",
        str(cfg),
    ]
    proc = subprocess.run(cmd, env=launch_env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr

    l1, l2 = train_losses(one), train_losses(two)
    assert len(l1) == len(l2) == 3
    torch.testing.assert_close(torch.tensor(l2), torch.tensor(l1), rtol=1e-5, atol=1e-5)
    w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-4)  # Adam amplifies float-order noise
