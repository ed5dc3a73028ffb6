"""Checkpoints under failure: a damaged or missing latest falls back loudly, a full disk is named as such and
leaves the previous checkpoint intact, Ctrl-C / SIGTERM save and stop with one line, and resuming after any of
them continues exactly (issue 16, item 2)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_loop_core import _cfg, _rows, _tiny_model

from minimind_hf.cli_errors import describe_failure
from minimind_hf.native import checkpoint as ckpt
from minimind_hf.native.interrupt import TrainingInterrupted
from minimind_hf.native.loop import Algorithm, train

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path, name, algo_cls=Algorithm, **kw):
    cfg = _cfg(tmp_path, name, **{"batch_size": 2, "max_steps": 6, "save_every": 1, "keep_last": 3, **kw})
    algo = algo_cls(cfg, _tiny_model(), None, _rows(24))
    return train(algo.cfg, algo)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("ref"), "ref").losses


def test_manifest_records_every_file(tmp_path):
    _run(tmp_path, "m", max_steps=2)
    step = tmp_path / "m" / "checkpoints" / "step_000002"
    files = json.loads((step / "manifest.json").read_text())["files"]
    on_disk = {p.relative_to(step).as_posix() for p in step.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(files) == on_disk and "model/model.safetensors" in files and "optimizer.pt" in files
    assert ckpt.verify_checkpoint(step) is None


def test_damaged_latest_falls_back_to_the_previous_checkpoint(tmp_path, caplog, uninterrupted):
    _run(tmp_path, "d")  # 6 steps; checkpoints 4, 5 and 6 kept
    root = tmp_path / "d" / "checkpoints"
    opt = root / "step_000006" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])  # truncated, as by a disk that filled up outside our writes
    assert "optimizer.pt has 100 bytes" in ckpt.verify_checkpoint(root / "step_000006")
    with caplog.at_level(logging.WARNING, logger="minimind_hf.native.checkpoint"):
        assert ckpt.find_latest_checkpoint(tmp_path / "d") == root / "step_000005"
    assert "step_000006 cannot be resumed" in caplog.text and "resuming from" in caplog.text
    # same size, other bytes: the sha256 catches it
    model = root / "step_000005" / "model" / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    assert "sha256" in ckpt.verify_checkpoint(root / "step_000005")
    assert ckpt.find_latest_checkpoint(tmp_path / "d") == root / "step_000004"
    # resuming from the fallback redoes steps 5-6 exactly as the uninterrupted run did them
    resumed = _run(tmp_path, "d", resume="auto")
    assert resumed.resumed_from.endswith("step_000004")
    assert resumed.losses == uninterrupted[4:]


def test_latest_naming_a_deleted_folder_or_missing_falls_back(tmp_path):
    _run(tmp_path, "g", max_steps=3)
    root = tmp_path / "g" / "checkpoints"
    ckpt.write_atomic(root / "latest", "step_000009")  # a folder that was pruned or never renamed into place
    assert ckpt.find_latest_checkpoint(tmp_path / "g") == root / "step_000003"
    (root / "latest").unlink()  # killed between the rename and writing `latest`
    assert ckpt.find_latest_checkpoint(tmp_path / "g") == root / "step_000003"
    # later folders than `latest` belong to an abandoned timeline: never a fallback
    ckpt.write_atomic(root / "latest", "step_000001")
    (root / "step_000001" / "optimizer.pt").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"no checkpoint that can be resumed.*resume=never"):
        ckpt.find_latest_checkpoint(tmp_path / "g")
    # ... and a folder whose checkpoints are all damaged is an error, never a silent restart from step 0
    with pytest.raises(ckpt.CheckpointError):
        _run(tmp_path, "g", max_steps=3, resume="auto")


def test_a_full_disk_is_named_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, "full", max_steps=2)
    root = tmp_path / "full" / "checkpoints"
    real_save = torch.save

    def fail_optimizer(obj, f, *a, **kw):  # what torch.save raises when the disk fills up mid-write
        if str(f).endswith("optimizer.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 4032")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt.torch, "save", fail_optimizer)
    with pytest.raises(OSError) as info:
        _run(tmp_path, "full", max_steps=4, resume="auto")
    assert info.value.errno == errno.ENOSPC and "step_000003" in str(info.value)
    message, status = describe_failure(info.value)
    assert message.startswith("error: no space left on device") and "resume" in message and status == 1
    assert not list(root.glob(".tmp_*"))  # the partial folder is gone
    assert (root / "latest").read_text() == "step_000002" and ckpt.verify_checkpoint(
        root / "step_000002"
    ) is None


class _SignalAtStep(Algorithm):
    """Sends this process `sig` during the forward pass of optimizer step `at` (mid-step, the worst
    moment)."""

    at, sig, calls = 3, signal.SIGINT, 0

    def compute_loss(self, model, batch, denom):
        type(self).calls += 1
        if type(self).calls == self.at:
            os.kill(os.getpid(), self.sig)
        return super().compute_loss(model, batch, denom)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_saves_and_resumes_exactly(tmp_path, sig, uninterrupted):
    _SignalAtStep.calls, _SignalAtStep.sig = 0, sig
    with pytest.raises(TrainingInterrupted) as info:
        _run(tmp_path, "int", _SignalAtStep, save_every=0)  # no periodic checkpoints: the signal's is the one
    assert info.value.step == 3 and info.value.checkpoint.endswith("step_000003")
    message, status = describe_failure(info.value)
    assert status == 130 and message == (
        f"stopped: {sig.name} at step 3 of 6: checkpoint saved to {info.value.checkpoint}; "
        "run the same command again to resume"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resumed = _run(tmp_path, "int", save_every=0, resume="auto")
    assert resumed.losses == uninterrupted[3:]


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_is_one_line(tmp_path):
    """The real thing: `minimind-hf train` in a subprocess, SIGINT once it has logged a step."""
    out = tmp_path / "cli"
    cmd = [
        sys.executable, "-m", "minimind_hf.cli", "train", "pretrain",
        "--config", str(ROOT / "recipes/configs/tiny/pretrain.yaml"), "--backend", "native",
        "--data", "demo:pretrain:400", "--vocab_size", "300", "--max_steps", "100000",
        "--output_dir", str(out), "--eval_strategy", "no", "--save_strategy", "no",
        "--logging_steps", "1", "--torch_compile", "false",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = out / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and log.read_text(encoding="utf-8").count("\n") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGINT at step ") and "run the same command again to resume" in last, (
        last
    )
    latest = (out / "checkpoints" / "latest").read_text()
    assert latest in last and ckpt.verify_checkpoint(out / "checkpoints" / latest) is None
