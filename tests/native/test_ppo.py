"""PPO: per-token rewards, GAE, clipped policy / value losses and the KL penalty against numbers worked out by
hand, and a few optimiser steps of policy + critic through the native loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from minimind_hf import MiniMindForCausalLM
from minimind_hf.data import demo_corpus, load_records
from minimind_hf.native.grpo import k3_kl
from minimind_hf.native.loop import train
from minimind_hf.native.ppo import PPO, PPOConfig, compute_gae, masked_whiten, ppo_losses, token_rewards


def test_token_rewards_put_the_score_on_the_last_token_and_kl_everywhere():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = token_rewards(torch.tensor([2.0, -1.0]), mask)
    assert r.tolist() == [[0, 0, 2.0], [0, -1.0, 0]]
    logps, ref = (
        torch.tensor([[-1.0, -2.0, -1.0], [-1.0, -1.0, -5.0]]),
        torch.tensor([[-1.5, -2.0, -1.0]] * 2),
    )
    r = token_rewards(torch.tensor([2.0, -1.0]), mask, logps, ref, kl_coef=0.1)
    torch.testing.assert_close(r, torch.tensor([[-0.05, 0.0, 2.0], [-0.05, -1.0 - 0.1, 0.0]]))


def test_gae_by_hand():
    """gamma 1, lambda 0.95, rewards [0, 0, 1], values [0.5, 0.6, 0.7] (V after the end = 0):
    delta = [0 + 0.6 - 0.5, 0 + 0.7 - 0.6, 1 + 0 - 0.7] = [0.1, 0.1, 0.3]
    A_2 = 0.3; A_1 = 0.1 + 0.95 * 0.3 = 0.385; A_0 = 0.1 + 0.95 * 0.385 = 0.46575; R = A + V."""
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 9.0]])  # row 2: last position is padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert adv[0].tolist() == pytest.approx([0.46575, 0.385, 0.3])
    assert ret[0].tolist() == pytest.approx([0.96575, 0.985, 1.0])
    # row 2 ends at t=1: delta_1 = 2 - 1 = 1, delta_0 = 0 + 1 - 1 = 0 -> A_0 = 0.95; padding stays 0
    assert adv[1].tolist() == pytest.approx([0.95, 1.0, 0.0])
    assert ret[1].tolist() == pytest.approx([1.95, 2.0, 0.0])
    # gamma < 1 discounts: one step, delta_0 = 0 + 0.9 * 2 - 1
    adv, _ = compute_gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 2.0]]), torch.ones(1, 2), 0.9, 1.0)
    assert adv[0].tolist() == pytest.approx([0.9 * 2 - 1 + 0.9 * (1 - 2), 1 - 2])


def test_clipped_losses_by_hand():
    """ratio = e^{logp - old}: token 0 ratio 1.5 (A=+1, clipped to 1.2), token 1 ratio 0.5 (A=+1, unclipped
    min -> 0.5), token 2 ratio 0.5 (A=-1, clipped at 0.8 -> loss 0.8 since max(-A r, -A clip))."""
    old = torch.zeros(1, 3)
    logps = torch.log(torch.tensor([[1.5, 0.5, 0.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    values = torch.tensor([[1.0, 0.0, 2.0]])
    old_values = torch.tensor([[0.5, 0.0, 2.0]])
    returns = torch.tensor([[2.0, 1.0, 2.0]])
    mask = torch.ones(1, 3)
    pg, vf, m = ppo_losses(
        logps, old, adv, values, old_values, returns, mask, clip_range=0.2, clip_range_value=0.2
    )
    # per token: max(-A r, -A clip(r)): [-1.2, -0.5, 0.8]
    assert pg.item() == pytest.approx((-1.2 - 0.5 + 0.8) / 3)
    # values: token 0 moved 0.5 -> 1.0, clipped to 0.7: max((1-2)^2, (0.7-2)^2) = 1.69; token 1: 1; token 2: 0
    assert vf.item() == pytest.approx(0.5 * (1.69 + 1.0 + 0.0) / 3)
    assert m["clipfrac"] == pytest.approx(2 / 3) and m["vf_clipfrac"] == pytest.approx(1 / 3)
    # the k3 KL used in "loss" mode: exp(d) - d - 1 with d = ref - logp
    assert k3_kl(torch.tensor([0.0]), torch.tensor([math.log(2)])).item() == pytest.approx(
        2 - math.log(2) - 1
    )


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = masked_whiten(x, mask)
    assert w[0, :3].tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4) and w[0, 3] == 0


def test_ppo_through_the_loop_trains_policy_and_critic(tmp_path, tiny_tokenizer, make_tiny_model):
    rows = demo_corpus.rl_prompts(4)
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recs = load_records("rl", str(path))
    model = make_tiny_model(seed=0)

    def digits(completions, **kw):
        return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

    cfg = PPOConfig(
        output_dir=str(tmp_path / "out"),
        data=[],
        batch_size=2,
        max_new_tokens=6,
        learning_rate=1e-3,
        critic_learning_rate=1e-2,
        max_steps=4,
        ppo_epochs=2,
        report_to=["none"],
        progress=False,
        resume="never",
    )
    algo = PPO(cfg, model, tiny_tokenizer, recs, reward_funcs=[digits])
    policy_before = {n: p.detach().clone() for n, p in algo.model.policy.named_parameters()}
    head_before = algo.model.critic.value_head.weight.detach().clone()
    result = train(cfg, algo)
    ac = algo.accelerator.unwrap_model(algo.model)
    assert len(result.losses) == 4 and all(math.isfinite(x) for x in result.losses)
    changed = [n for n, p in ac.policy.named_parameters() if not torch.equal(policy_before[n], p.detach())]
    assert len(changed) == len(policy_before)  # every policy parameter moved
    assert not torch.equal(head_before, ac.critic.value_head.weight.detach())  # and the critic learned
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert {"policy_loss", "value_loss", "kl", "reward", "clipfrac"} <= set(log[-1])
    assert (tmp_path / "out" / "value_model.safetensors").is_file()
    assert (tmp_path / "out" / "model.safetensors").is_file()
    # the saved policy is a plain MiniMind folder
    reloaded = MiniMindForCausalLM.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(reloaded.lm_head.weight, ac.policy.lm_head.weight)


@pytest.fixture
def ppo_setup(tmp_path, tiny_tokenizer, make_tiny_model):
    """`ppo_setup(out, **settings)` -> (config, PPO on a new seed-0 tiny model) on 8 rl prompts."""
    path = tmp_path / "rl.jsonl"
    rows = demo_corpus.rl_prompts(8)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    def digits(completions, **kw):
        return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

    def make(out: str, **overrides):
        recs = load_records("rl", str(path))
        model = make_tiny_model(seed=0)
        settings = dict(
            output_dir=str(tmp_path / out), data=[], batch_size=4, max_new_tokens=5, learning_rate=1e-3,
            critic_learning_rate=1e-2, ppo_epochs=2, mini_batch_size=2, report_to=["none"], progress=False,
            resume="never", seed=3, min_lr_ratio=1.0,  # a constant rate: runs of other lengths share steps
        )  # fmt: skip
        cfg = PPOConfig(**{**settings, **overrides})
        return cfg, PPO(cfg, model, tiny_tokenizer, recs, reward_funcs=[digits])

    return make


def test_minibatch_plan_shuffles_each_pass_and_covers_every_row():
    from minimind_hf.native.ppo import minibatch_plan

    torch.manual_seed(0)
    cfg = PPOConfig(batch_size=5, mini_batch_size=2, ppo_epochs=3)
    plan = minibatch_plan(5, cfg)
    assert cfg.minibatches_per_pass == 3 and len(plan) == 9
    for p in range(3):  # each pass: every row once, in pieces of 2, 2, 1
        piece = plan[3 * p : 3 * p + 3]
        assert [len(x) for x in piece] == [2, 2, 1] and sorted(sum(piece, [])) == list(range(5))
    assert minibatch_plan(5, PPOConfig(batch_size=5, ppo_epochs=2)) == [list(range(5))] * 2
    problems = PPOConfig(data=["x"], model="m", batch_size=2, mini_batch_size=3, early_stop_kl=-1).validate()
    assert any("mini_batch_size must be in [0, batch_size=2]" in p for p in problems)
    assert any("early_stop_kl must be >= 0" in p for p in problems)


def test_ppo_minibatches_use_each_rollout_for_passes_times_pieces_steps(ppo_setup, tmp_path, monkeypatch):
    """batch 4, mini-batch 2, 2 passes: one rollout per 4 optimiser steps, each step on 2 of its rows, and the
    next rollout samples new prompts (no drawn row is thrown away)."""
    import minimind_hf.native.ppo as ppo_mod

    cfg, algo = ppo_setup("mb", max_steps=8)
    prompts, rows_per_step = [], []
    real_rollout, real_step = ppo_mod.ppo_rollout, ppo_mod.ppo_step

    def counting_rollout(policy, critic, reference, tokenizer, records, *a, **k):
        prompts.append([json.dumps(r["prompt"]) for r in records])
        return real_rollout(policy, critic, reference, tokenizer, records, *a, **k)

    def counting_step(ac, batch, *a, **k):
        rows_per_step.append(batch["input_ids"].size(0))
        return real_step(ac, batch, *a, **k)

    monkeypatch.setattr(ppo_mod, "ppo_rollout", counting_rollout)
    monkeypatch.setattr(ppo_mod, "ppo_step", counting_step)
    result = train(cfg, algo)
    assert len(result.losses) == 8 and all(math.isfinite(x) for x in result.losses)
    assert len(prompts) == 2 and rows_per_step == [2] * 8
    assert sorted(prompts[0] + prompts[1]) == sorted(  # two draws: all 8 prompts, each once
        json.dumps(r["prompt"]) for r in load_records("rl", str(tmp_path / "rl.jsonl"))
    )


def test_ppo_early_stop_on_kl_ends_the_rollout_and_samples_anew(ppo_setup, tmp_path):
    """A tiny early_stop_kl stops every rollout at its first update after the first (the first mini-batch
    is at pi_old: KL 0), so each rollout trains 2 steps (the second with zero loss) instead of 4."""
    cfg, algo = ppo_setup("stop", max_steps=6, early_stop_kl=1e-12, learning_rate=1e-2)
    made = []
    real = algo.prepare_batch
    algo.prepare_batch = lambda model, batch: made.append(1) or real(model, batch)
    train(cfg, algo)
    log = [json.loads(line) for line in (tmp_path / "stop" / "train_log.jsonl").read_text().splitlines()]
    assert [r["early_stop"] for r in log if "early_stop" in r] == [0.0, 1.0] * 3
    assert len(made) == 3


def test_ppo_resumes_exactly_in_the_middle_of_a_rollout(ppo_setup, tmp_path):
    """A checkpoint at step 3 of a 4-step rollout window holds that rollout (batches_rank0.pt); resuming
    gives the uninterrupted run's losses, step for step."""
    cfg, algo = ppo_setup("full", max_steps=6, save_every=3)
    full = train(cfg, algo).losses
    assert (tmp_path / "full" / "checkpoints" / "step_000003" / "batches_rank0.pt").is_file()
    cfg, algo = ppo_setup("part", max_steps=3, save_every=3)
    first = train(cfg, algo).losses
    cfg, algo = ppo_setup("part", max_steps=6, save_every=3, resume="auto")
    rest = train(cfg, algo).losses
    assert first + rest == pytest.approx(full, rel=1e-5, abs=1e-7)
