"""Resume: SIGKILL a training run right after its first checkpoint, resume it, and get the same weights
as a run that was never interrupted (fp32 CPU)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from _native_helpers import popen_cli, read_log, recipe_config
from minimind_hf.recipes import pretrain
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # subprocess runs of the CLI


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, demo_files, tiny_tokenizer_dir):
    """Through `minimind-hf train pretrain` with a recipe YAML; the reference runs the same YAML
    in-process."""
    common = dict(
        data=[str(demo_files["pretrain"])],
        max_records=60,
        packing=True,
        max_length=32,
        per_device_train_batch_size=2,
        max_steps=40,
        learning_rate=3e-3,
        warmup_steps=3,
        save_strategy="steps",
        save_steps=4,
        save_total_limit=2,
        eval_ratio=0.05,
        eval_strategy="steps",
        eval_steps=10,
    )
    # the reference: one uninterrupted run (in-process)
    ref_dir = tmp_path / "ref"
    ref_cfg = recipe_config(tmp_path / "ref.yaml", tiny_tokenizer_dir, output_dir=str(ref_dir), **common)
    pretrain.main(*pretrain.parse_args(["--config", str(ref_cfg), "--backend", "native"]))

    out = tmp_path / "killed"
    cfg = recipe_config(tmp_path / "c.yaml", tiny_tokenizer_dir, output_dir=str(out), **common)
    proc = popen_cli("train", "pretrain", "--config", str(cfg))
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 150
    while not latest.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no cleanup, no final save
    proc.wait()
    assert not (out / "train_result.json").exists(), "the run finished before it could be killed"
    killed_at = json.loads((out / "checkpoints" / latest.read_text() / "trainer_state.json").read_text())[
        "step"
    ]
    assert killed_at < 40

    proc = popen_cli("train", "pretrain", "--config", str(cfg), "--resume_from_checkpoint", "true")
    stdout, _ = proc.communicate(timeout=150)
    assert proc.returncode == 0, stdout[-3000:]
    result = json.loads((out / "train_result.json").read_text())
    assert result["resumed_from"].endswith(f"step_{killed_at:06d}")
    assert result["steps"] == 40

    ref, got = load_file(ref_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)
    # the step log of the resumed run is the uninterrupted run's (no duplicate steps from the killed run)
    ref_log, got_log = read_log(ref_dir), read_log(out)
    assert [r["step"] for r in got_log] == [r["step"] for r in ref_log]
    torch.testing.assert_close(
        torch.tensor([r.get("loss", r.get("eval/loss")) for r in got_log]),
        torch.tensor([r.get("loss", r.get("eval/loss")) for r in ref_log]),
        rtol=1e-5,
        atol=1e-6,
    )
