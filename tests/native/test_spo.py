"""SPO: the tracker's updates and forgetting against values worked out by hand, batch-normalised advantages,
priority sampling, tracker state through a checkpoint, and a toy task whose reward rises."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _native_helpers import base_config, rl_inputs

from minimind_hf.native.config import ConfigError, load_config
from minimind_hf.native.spo import SPOConfig, ValueTracker, run_spo, spo_advantages


def test_tracker_updates_and_forgetting_by_hand():
    t = ValueTracker(3, rho_min=0.5, rho_max=0.96, d_half=0.06)
    prior = 0.5 / (1 - 0.5)  # = 1.0
    assert t.alpha.tolist() == [prior] * 3 and t.baseline(torch.tensor([0])).item() == 0.5
    # first visit: rho = rho_max
    rho = t.update(torch.tensor([0]), torch.tensor([1.0]), torch.tensor([-2.0]))
    assert rho.item() == pytest.approx(0.96)
    assert t.alpha[0].item() == pytest.approx(0.96 * 1 + 1) and t.beta[0].item() == pytest.approx(
        0.96 * 1 + 0
    )
    # second visit, log-prob moved by 0.03 = d_half / 2: rho = 2 ** -0.5
    a, b = t.alpha[0].item(), t.beta[0].item()
    rho = t.update(torch.tensor([0]), torch.tensor([0.0]), torch.tensor([-2.03]))
    assert rho.item() == pytest.approx(2**-0.5)
    assert t.alpha[0].item() == pytest.approx(2**-0.5 * a) and t.beta[0].item() == pytest.approx(
        2**-0.5 * b + 1
    )
    # a large move forgets as much as allowed (rho_min); the baseline follows the new evidence
    rho = t.update(torch.tensor([0]), torch.tensor([0.0]), torch.tensor([-5.0]))
    assert rho.item() == 0.5
    # untouched prompts keep the prior; priorities favour uncertain prompts
    assert t.baseline(torch.tensor([1])).item() == 0.5
    p = t.priorities(0.05)
    assert p[1] == pytest.approx(0.5 + 0.05) and p[0] < p[1]


def test_a_repeated_prompt_in_a_batch_is_updated_twice_in_order():
    t = ValueTracker(1)
    t.update(torch.tensor([0, 0]), torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0]))
    # first visit rho_max = 0.96, then same log-prob: D = 0 -> rho = 1 clipped to 0.96
    assert t.alpha[0].item() == pytest.approx(0.96 * (0.96 * 1 + 1) + 1)


def test_advantages_are_reward_minus_baseline_standardised():
    r, v = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.5, 0.5, 0.9, 0.1])
    a = spo_advantages(r, v)
    raw = torch.tensor([0.5, -0.5, 0.1, -0.1])
    torch.testing.assert_close(a, (raw - raw.mean()) / (raw.std() + 1e-4))
    assert spo_advantages(torch.tensor([1.0]), torch.tensor([0.25])).item() == 0.75


def test_config_checks():
    with pytest.raises(ConfigError, match="num_generations must be 1"):
        load_config(SPOConfig, None, {"data": ["x"], "num_generations": 4})


def test_toy_task_reward_rises_and_the_tracker_is_checkpointed(tmp_path, tiny_tokenizer, make_tiny_model):
    """Reward: the share of sampled tokens with an even id (about half at random; a random tiny model learns
    to raise it in a few dozen single-sample steps at a high learning rate)."""
    from minimind_hf.rewards import REWARDS, register_reward

    if "even_tokens" not in REWARDS:

        @register_reward("even_tokens")
        def even_tokens(completions, completion_ids, **kwargs):
            return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]

    rows = [
        {"conversations": [{"role": "user", "content": f"say something {i}"}], "gt": "A"} for i in range(8)
    ]
    model = make_tiny_model(seed=0)
    base, data = rl_inputs(tmp_path, model, tiny_tokenizer, rows)
    cfg = load_config(
        SPOConfig,
        None,
        base_config(
            base,
            model=str(base),
            output_dir=str(tmp_path / "out"),
            data=[str(data)],
            rewards=["even_tokens"],
            batch_size=8,
            max_new_tokens=4,
            max_steps=40,
            learning_rate=3e-2,
            beta=0.0,
            temperature=1.0,
            min_lr_ratio=1.0,
            save_every=20,
            resume="never",
        ),
    )
    run_spo(cfg)
    log = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in log if "reward" in r]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-10:]) / 10  # measured: 0.40 -> 1.0
    assert first < 0.7 and last > first + 0.3, (first, last)
    assert all(0.0 <= r["baseline"] <= 1.0 and 0.5 <= r["rho"] <= 0.96 for r in log if "rho" in r)
    extra = torch.load(tmp_path / "out" / "checkpoints" / "step_000020" / "extra.pt", weights_only=True)
    tracker = extra["tracker"]
    assert tracker["alpha"].shape == (8,) and not math.isnan(tracker["last_logp"].sum().item())
