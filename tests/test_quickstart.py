"""The README's main command, scaled down: `minimind-hf quickstart` end to end through the real CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import minimind_hf  # noqa: F401  (registers the Auto classes for the in-process reload)

pytestmark = pytest.mark.slow  # the full pipeline

CLI = [sys.executable, "-m", "minimind_hf.cli"]


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    cmd = CLI + [
        "quickstart",
        "--out",
        str(out),
        "--max-steps",
        "30",
        "--pretrain-docs",
        "600",
        "--vocab-size",
        "700",
        "--seq-len",
        "128",
        "--batch-size",
        "8",
        "--samples",
        "2",
        "--sft-steps",
        "8",
        "--sft-conversations",
        "200",
        "--grpo-steps",
        "2",
        "--grpo-prompts",
        "2",
        "--grpo-group",
        "3",
        "--tool-conversations",
        "100",
        "--eval-problems",
        "4",
        "--novel-problems",
        "3",
        "--max-new-tokens",
        "16",
        "--threads",
        "1",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Held-out problems" in proc.stdout and "trust_remote_code=True" in proc.stdout
    assert "held-out accuracy:" in proc.stdout and "after agentic RL (calculator)" in proc.stdout

    summary = json.loads((out / "quickstart.json").read_text(encoding="utf-8"))
    assert summary["vocab_size"] == 700
    assert summary["final_loss"] < summary["first_loss"] - 1.0, summary
    assert len(summary["samples"]) == 2
    # held-out accuracy of the SFT model and of the GRPO model, on the same 4 problems
    assert summary["eval_problems"] == 4
    for key in ("heldout_accuracy_before", "heldout_accuracy_after"):
        assert isinstance(summary[key], float) and 0.0 <= summary[key] <= 1.0, (key, summary[key])
    assert set(summary["stage_seconds"]) >= {"pretrain", "sft", "eval_before", "grpo", "eval_after"}

    # the GRPO stage ran, and its output is the final folder
    model_dir = Path(summary["model_dir"])
    assert model_dir == out / "model"
    log = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2], log
    assert all(0.0 <= r["rewards/accuracy_reward"] <= 1.0 and "tool_calls" in r for r in steps)
    assert summary["grpo_steps"] == 2 and summary["tools"] is True
    for name, n in (("heldout", 4), ("novel", 3)):  # the held-out evaluations (with the calculator)
        for stage in ("sft", "rl"):
            held = summary[name][stage]
            assert held["n"] == n and 0.0 <= held["ci95"][0] <= held["accuracy"] <= held["ci95"][1] <= 1.0
            assert 0.0 <= held["tool_call_rate"] <= 1.0
    assert "new wordings:" in proc.stdout
    # the run report: real PNGs for every stage and the accuracy bars, linked from report.md
    report = (out / "report.md").read_text(encoding="utf-8")
    for png in ("pretrain_curves.png", "sft_curves.png", "rl_curves.png", "heldout_accuracy.png"):
        assert f"({png})" in report and (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "| held-out | rl |" in report and "| new wordings | sft |" in report
    stage_report = (model_dir / "report.md").read_text(encoding="utf-8")
    assert "(training_curves.png)" in stage_report and "| last reward |" in stage_report
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_minimind.py",
        "configuration_minimind.py",
        "tokenizer.json",
        "chat_template.jinja",
    ):
        assert (model_dir / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok("Q: 2 + 3 = ?\nA:", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()


def test_quickstart_missing_data_file_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        CLI + ["quickstart", "--out", str(tmp_path), "--data", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr and "Traceback" not in proc.stderr
