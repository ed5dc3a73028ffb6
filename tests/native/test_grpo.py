"""GRPO / CISPO: advantages and k3 KL by hand, the loss vs trl's GRPOTrainer for every shared loss type,
memory-safe log-probs that ignore left padding, and a run through the native loop that raises the reward."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from minimind_hf import MiniMindConfig, MiniMindForCausalLM
from minimind_hf.data import demo_corpus, load_records
from minimind_hf.native.grpo import GRPO, GRPOConfig, group_advantages, grpo_loss, k3_kl, mean_reward
from minimind_hf.native.loop import train
from minimind_hf.native.rl_common import pad, per_token_logps
from minimind_hf.native.rollout import sample_completions


@pytest.fixture
def tok(tiny_tokenizer):
    """The session's tiny tokenizer (shared: read only)."""
    return tiny_tokenizer


def test_group_advantages_and_k3_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # 2 prompts x 4 samples
    a = group_advantages(r, 4)
    std = math.sqrt(sum((x - 0.5) ** 2 for x in (1, 0, 0, 1)) / 3)  # unbiased, as trl
    assert a[:4].tolist() == pytest.approx(
        [0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 1 + [-0.5 / (std + 1e-4), 0.5 / (std + 1e-4)]
    )
    assert a[4:].tolist() == [0.0] * 4  # equal rewards: no signal
    assert group_advantages(r, 4, "none").tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    b = group_advantages(r, 4, "batch")
    assert b[0].item() == pytest.approx(0.5 / (r.std().item() + 1e-4)) and b[4].item() == 0.0  # group-centred
    from trl.trainer.utils import nanstd

    torch.testing.assert_close(r.view(-1, 4).std(dim=1), nanstd(r.view(-1, 4), dim=1))
    lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    expected = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert k3_kl(lp, ref)[0].tolist() == pytest.approx(expected)


def test_cispo_keeps_gradients_of_clipped_tokens():
    """GRPO's min(rho A, clip(rho) A) has zero gradient where the clip is active; CISPO clips only the
    (detached) weight, so every token keeps a gradient (MiniMax-M1)."""
    old = torch.zeros(1, 3)
    logps = torch.tensor([[0.5, 0.0, -0.5]], requires_grad=True)  # rho = e^0.5 > 1.2 on token 0
    adv, mask = torch.tensor([1.0]), torch.ones(1, 3)
    grpo_loss(logps, old, adv, mask, loss_type="grpo")[0].backward()
    assert logps.grad[0, 0] == 0 and logps.grad[0, 1] != 0
    logps.grad = None
    loss, m = grpo_loss(logps, old, adv, mask, loss_type="cispo", epsilon_high=1.2)
    loss.backward()
    assert (logps.grad != 0).all() and m["clip_ratio"] == pytest.approx(1 / 3)
    assert logps.grad[0, 0].item() == pytest.approx(-1.2 / 3)  # -min(rho, 1.2) * A / tokens


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "cispo"])
def test_micro_batches_with_the_step_count_give_the_full_batch_loss(loss_type):
    """The loop sums micro-batch losses, each divided by the step's grpo_num_items: the result must equal
    the loss of the whole batch at once, for every normalisation."""
    from minimind_hf.native.grpo import grpo_num_items

    g = torch.Generator().manual_seed(0)
    B, K = 6, 5
    logps = -torch.rand(B, K, generator=g)
    old, ref = logps + 0.2 * torch.randn(B, K, generator=g), logps + 0.1 * torch.randn(B, K, generator=g)
    mask = (torch.arange(K)[None] < torch.tensor([5, 2, 4, 1, 3, 5])[:, None]).float()
    adv = torch.randn(B, generator=g)
    kw = dict(
        beta=0.1,
        loss_type=loss_type,
        max_completion_length=8,
        epsilon_high=0.28 if loss_type != "cispo" else 4,
    )
    full, _ = grpo_loss(logps, old, adv, mask, ref_logps=ref, **kw)
    parts = [slice(0, 2), slice(2, 3), slice(3, 6)]
    n = sum(grpo_num_items(mask[p], loss_type, 8) for p in parts)
    summed = sum(
        grpo_loss(logps[p], old[p], adv[p], mask[p], ref_logps=ref[p], num_items=n, **kw)[0] for p in parts
    )
    assert summed.item() == pytest.approx(full.item(), abs=1e-6)


@pytest.fixture
def fresh_accelerate_state():
    """trl initialises accelerate's process-wide state; reset it so later native-loop tests can start."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize(
    "loss_type, kl_corr",
    [("grpo", False), ("grpo", True), ("bnpo", False), ("dr_grpo", False), ("dapo", True), ("cispo", False)],
)
def test_loss_parity_with_trl_grpo_trainer(
    tok, make_tiny_model, tmp_path, loss_type, kl_corr, fresh_accelerate_state
):
    """trl's GRPOTrainer._compute_loss vs our per_token_logps + grpo_loss on the same prompts, completions,
    advantages, old and reference log-probs (ratios away from 1 so clipping is active, beta = 0.1).

    trl runs with bf16=False (its default autocasts to bf16 even on CPU, which moves log-probs by ~2e-3) and
    ``use_bias_correction_kl`` = our ``kl_ratio_correction`` (both settings are compared).
    Tolerance: 1e-5 on the loss and metrics (fp32; the log-probs themselves agree exactly). Prompts have equal
    length here: we pass position ids from the attention mask (as `generate` does), trl does not, so with
    left-padded prompts the two differ by design."""
    from datasets import Dataset
    from trl import GRPOConfig as TrlGRPOConfig
    from trl import GRPOTrainer

    B, P, K = 6, 7, 9
    ours = make_tiny_model()
    ours.save_pretrained(tmp_path / "model")  # trl builds its reference model from the model's path
    tok.save_pretrained(tmp_path / "model")
    model = MiniMindForCausalLM.from_pretrained(tmp_path / "model")
    eps_high = 5.0 if loss_type == "cispo" else 0.28
    args = TrlGRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=B,
        num_generations=3,
        beta=0.1,
        loss_type=loss_type,
        epsilon=0.2,
        epsilon_high=eps_high,
        max_completion_length=12,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        bf16=False,
        use_bias_correction_kl=kl_corr,
    )
    ds = Dataset.from_list([{"prompt": "1+1="}] * B)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=ds,
        processing_class=tok,
    )
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    g = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(40, 400, (B, P), generator=g)
    completion_ids = torch.randint(40, 400, (B, K), generator=g)
    lengths = torch.tensor([9, 4, 7, 1, 9, 6])
    completion_mask = (torch.arange(K)[None] < lengths[:, None]).long()
    with torch.no_grad():
        full = torch.cat([prompt_ids, completion_ids], 1)
        am = torch.cat([torch.ones_like(prompt_ids), completion_mask], 1)
        cur = per_token_logps(ours, full, am, K)
    old = cur + 0.3 * torch.randn(B, K, generator=g)  # ratios in roughly [0.4, 2.5]
    ref = cur + 0.2 * torch.randn(B, K, generator=g)
    adv = torch.tensor([1.2, -0.7, 0.3, -1.5, 0.9, -0.2])
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": completion_mask.sum(),
    }
    trl_loss = trainer._compute_loss(trainer.model, inputs)

    logps = per_token_logps(ours, full, am, K)
    loss, metrics = grpo_loss(
        logps,
        old,
        adv,
        completion_mask,
        ref_logps=ref,
        beta=0.1,
        loss_type=loss_type,
        epsilon_low=0.2,
        epsilon_high=eps_high,
        max_completion_length=12,
        kl_ratio_correction=kl_corr,
    )
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert metrics["kl"] == pytest.approx(trainer._metrics["train"]["kl"][-1], abs=1e-5)
    clip_key = "cispo_clip_ratio" if loss_type == "cispo" else "clip_ratio/region_mean"
    assert metrics["clip_ratio"] == pytest.approx(trainer._metrics["train"][clip_key][-1], abs=1e-6)
    if loss_type != "cispo":
        assert metrics["clip_ratio"] > 0  # the clip is exercised


def test_logps_ignore_left_padding_and_sampling_masks_after_eos(tok, make_tiny_model):
    model = make_tiny_model().eval()
    a = tok("<|im_start|>user\n3+4=?<|im_end|>\n", add_special_tokens=False)["input_ids"]
    b = tok("<|im_start|>user\nWhat is 10 minus 2? Think.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    comp = [50, 60, 70, 2]
    ids, am = pad([a + comp, b + comp], tok.pad_token_id, side="left")
    with torch.no_grad():
        batched = per_token_logps(model, ids, am, 4, chunk_rows=1)
        alone = per_token_logps(
            model, torch.tensor([a + comp]), torch.ones(1, len(a) + 4, dtype=torch.long), 4
        )
        full = torch.log_softmax(model(torch.tensor([a + comp])).logits[0, -5:-1], -1)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        alone[0], full.gather(-1, torch.tensor(comp)[:, None])[:, 0], atol=1e-5, rtol=1e-5
    )
    torch.manual_seed(0)
    s = sample_completions(
        model,
        [a, b],
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        num_samples=3,
        max_new_tokens=6,
        generation_chunk=4,
    )
    assert s["completion_ids"].shape[0] == 6 and s["prompt_ids"].shape[0] == 6
    assert torch.equal(s["prompt_ids"][0], s["prompt_ids"][2])  # prompt-major groups
    for ids_row, m in zip(s["completion_ids"], s["completion_mask"], strict=True):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # mask = prefix
        assert (ids_row[: n - 1] != tok.eos_token_id).all()  # only the last kept token may be eos


def _count_reward(completions, **kwargs):
    """Toy verifiable task: the share of digit characters in the completion."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def test_grpo_through_the_loop_raises_the_reward(tok, make_tiny_model, tmp_path):
    rows = demo_corpus.rl_prompts(8)
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recs = load_records("rl", str(path))
    cfg = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        data=[],
        num_generations=6,
        batch_size=2,
        max_new_tokens=8,
        learning_rate=2e-2,
        beta=0.02,
        max_steps=14,
        report_to=["none"],
        progress=False,
        resume="never",
        min_lr_ratio=1.0,
        num_iterations=2,
        loss_type="dapo",
    )
    model = make_tiny_model(seed=5)
    algo = GRPO(cfg, model, tok, recs, reward_funcs=[_count_reward])
    probe = [recs[i] for i in range(8)]
    torch.manual_seed(0)
    before = mean_reward(model, tok, probe, [_count_reward], cfg, samples=8)
    result = train(cfg, algo)
    torch.manual_seed(0)
    after = mean_reward(
        algo.accelerator.unwrap_model(algo.model), tok, probe, [_count_reward], cfg, samples=8
    )
    assert after > before + 0.1, (before, after)
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert "kl" in log[-1] and "reward" in log[-1] and "clip_ratio" in log[-1]
    assert len(result.losses) == 14


def test_rollout_with_registered_rewards_and_open_thinking(tok, make_tiny_model, tmp_path):
    """The default rewards (accuracy + think_format) get ground_truth from the rl records; prompts render
    with open_thinking as configured; sampling and the reference run without gradients."""
    rows = demo_corpus.rl_prompts(2)
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recs = [r for r in load_records("rl", str(path))]
    from minimind_hf.native.grpo import grpo_rollout
    from minimind_hf.rewards import get_rewards

    cfg = GRPOConfig(num_generations=3, max_new_tokens=4, open_thinking=True, beta=0.1, num_iterations=2)
    model = make_tiny_model()
    batch = grpo_rollout(model, copy.deepcopy(model), tok, recs, get_rewards(cfg.rewards), cfg)
    assert batch["input_ids"].shape[0] == 6 and batch["advantages"].shape == (6,)
    assert "rewards/accuracy_reward" in batch and "rewards/think_format_reward" in batch
    assert batch["old_logps"].shape == batch["ref_logps"].shape == batch["completion_mask"].shape
    assert not batch["old_logps"].requires_grad
    torch.testing.assert_close(
        batch["old_logps"] * batch["completion_mask"], batch["ref_logps"] * batch["completion_mask"]
    )  # same weights
    P = batch["input_ids"].size(1) - batch["completion_mask"].size(1)
    prompt = tok.decode(batch["input_ids"][0, :P][batch["attention_mask"][0, :P].bool()])
    assert prompt.endswith("<think>\n") and rows[0]["conversations"][0]["content"] in prompt


def _config_only_model(folder):
    """What config validation looks at in a model folder (config.json, a tokenizer file), without weights."""
    MiniMindConfig.from_preset("tiny").save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text("{}", encoding="utf-8")


def test_stage_config_reward_options_and_errors(tmp_path):
    from minimind_hf.native.config import ConfigError, load_config
    from minimind_hf.native.grpo import rewards_from_config

    (tmp_path / "rl.jsonl").write_text('{"question": "1+1?", "answer": 2}\n', encoding="utf-8")
    _config_only_model(tmp_path / "m")
    base = [f"data=[{tmp_path / 'rl.jsonl'}]", f"model={tmp_path / 'm'}"]
    cfg = load_config(
        GRPOConfig,
        None,
        base
        + [
            "rewards=[accuracy,length]",
            "reward_options.length.max_length=64",
            "reward_options.length.cache=16",
        ],
    )
    accuracy, length = rewards_from_config(cfg)
    assert length(["x"], completion_ids=[[0] * 56]) == [-0.5]
    with pytest.raises(ConfigError) as e:
        load_config(GRPOConfig, None, base + ["rewards=[acc]", "loss_type=ppo", "num_generations=1"])
    text = str(e.value)
    assert "valid: accuracy" in text and "loss_type 'ppo'" in text and "num_generations" in text
    with pytest.raises(ConfigError, match="options are"):
        load_config(GRPOConfig, None, base + ["rewards=[length]", "reward_options.length.max_len=3"])


@pytest.mark.parametrize("stage", ["grpo", "ppo", "spo", "agent"])
def test_rl_sampling_settings_are_validated_before_any_work(tmp_path, stage):
    """temperature 0 divided the logits by zero (NaN loss at step 1), a negative one flipped their sign and
    trained on it, top_p 5 was accepted: every RL stage refuses them up front, naming the field."""
    from minimind_hf.native.config import ConfigError, load_config
    from minimind_hf.native.stages import get_stage

    (tmp_path / "rl.jsonl").write_text('{"question": "1+1?", "answer": 2}\n', encoding="utf-8")
    _config_only_model(tmp_path / "m")
    base = [f"data=[{tmp_path / 'rl.jsonl'}]", f"model={tmp_path / 'm'}"]
    if stage == "spo":
        base.append("num_generations=1")
    config_cls = get_stage(stage).config_cls
    for bad, expected in (
        ("temperature=0", "temperature must be > 0"),
        ("temperature=-1", "temperature must be > 0"),
        ("top_p=5", "top_p must be in (0, 1]"),
    ):
        with pytest.raises(ConfigError) as e:
            load_config(config_cls, None, base + [bad])
        assert expected in str(e.value), (stage, bad, str(e.value))
    load_config(config_cls, None, base + ["temperature=0.1", "top_p=0.9"])  # small but valid
