"""The agent stage's two backends on one multi-turn tool-use rollout: trl's ``GRPOTrainer(tools=...)`` (with
MiniMind's response template) and our rollout engine produce the same tokens and the same trained-token mask
from a model that calls the calculator, and trl's loss equals ours on that rollout. The reward columns rebuilt
from trl's completion messages equal the native rollout's."""

from __future__ import annotations

import pytest
import torch
from _native_helpers import TOOL_CONVERSATION, TOOL_PROMPT, tiny_lm
from _tool_models import memorise
from minimind_hf.recipes.agent import agent_rewards, trl_rollout_columns, trl_tools

from minimind_hf.native.grpo import grpo_loss
from minimind_hf.native.rl_common import per_token_logps
from minimind_hf.native.rollout import rollout, score
from minimind_hf.rewards import get_rewards
from minimind_hf.tools import get_tools, tool_schemas


@pytest.fixture
def fresh_accelerate_state():
    """trl initialises accelerate's process-wide state; reset it so later native-loop tests can start."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def caller(tmp_path_factory, tiny_tokenizer):
    """A tiny model that answers TOOL_PROMPT by calling the calculator, saved (trl loads its reference by
    path)."""
    model = tiny_lm(tiny_tokenizer)
    memorise(model, tiny_tokenizer, TOOL_CONVERSATION, tool_schemas(get_tools(["calculator"])))
    out = tmp_path_factory.mktemp("caller")
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def test_trl_and_native_make_the_same_multi_turn_rollout_and_loss(caller, tmp_path, fresh_accelerate_state):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from minimind_hf import MiniMindForCausalLM

    tok = AutoTokenizer.from_pretrained(caller)  # trl's own (it may set attributes on it), not the shared one
    G = 2
    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=G,
        num_generations=G,
        max_completion_length=120,
        max_tool_calling_iterations=2,
        generation_kwargs={"do_sample": False},  # greedy, so both engines must produce the same tokens
        loss_type="cispo",
        epsilon_high=5.0,
        beta=0.0,
        report_to=[],
        use_cpu=True,
        bf16=False,
        save_strategy="no",
    )
    rewards = get_rewards(["gt_coverage", "tool_use", "tool_format", "unfinished"])
    trainer = GRPOTrainer(
        model=MiniMindForCausalLM.from_pretrained(caller),
        reward_funcs=agent_rewards(rewards, tok),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": TOOL_PROMPT, "ground_truth": "42"}] * G),
        processing_class=tok,
        tools=trl_tools(["calculator"]),
    )
    trainer.model.eval()
    batch = trainer._generate_and_score_completions([{"prompt": TOOL_PROMPT, "ground_truth": "42"}] * G)

    model = MiniMindForCausalLM.from_pretrained(caller).eval()
    ours = rollout(
        model,
        tok,
        [{"prompt": TOOL_PROMPT, "ground_truth": "42"}],
        num_samples=G,
        max_new_tokens=120,
        temperature=0.0,
        tools=get_tools(["calculator"]),
        max_turns=3,
    )
    assert ours.turns == [2, 2] and ours.texts == ["The answer is 42."] * G
    # same prompt, same completion tokens (call, rendered tool response, answer), same trained-token mask
    assert torch.equal(batch["prompt_ids"], ours.prompt_ids)
    k = ours.completion_ids.shape[1]
    assert torch.equal(batch["completion_ids"][:, :k], ours.completion_ids)
    trl_mask = batch["completion_mask"] * batch["tool_mask"]
    assert torch.equal(trl_mask[:, :k], ours.policy_mask) and not trl_mask[:, k:].any()
    assert 0 < int(ours.policy_mask.sum()) < int(ours.completion_mask.sum())  # the tool response is masked
    # each reward scores trl's rollout as it scores ours: gt found, one good call, clean format, finished
    native = score(ours, rewards)[1]
    logged = trainer._metrics["eval"]  # generated with the model in eval mode
    for name, values in native.items():
        assert logged[f"rewards/{name}/mean"][-1] == pytest.approx(values.mean().item()), name
    assert [v.mean().item() for v in native.values()] == [1.0, 0.5, 0.0, 0.0]

    # the CISPO loss of trl on its batch equals ours on our rollout (same advantages, old log-probs)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    g = torch.Generator().manual_seed(0)
    adv = torch.tensor([0.8, -0.6])
    full = torch.cat([ours.prompt_ids, ours.completion_ids], 1)
    am = torch.cat([ours.prompt_mask, ours.completion_mask], 1)
    with torch.no_grad():
        cur = per_token_logps(model, full, am, k)
    old = cur + 0.3 * torch.randn(cur.shape, generator=g)
    inputs = {
        **batch,
        "completion_ids": ours.completion_ids,
        "completion_mask": ours.completion_mask,
        "tool_mask": ours.policy_mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": ours.policy_mask.sum(),
    }
    inputs.pop("ref_per_token_logps", None)
    trl_loss = trainer._compute_loss(trainer.model, inputs)
    model.train()
    loss, _ = grpo_loss(
        per_token_logps(model, full, am, k),
        old,
        adv,
        ours.policy_mask,
        loss_type="cispo",
        epsilon_low=0.2,
        epsilon_high=5.0,
        max_completion_length=120,
    )
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)


def test_reward_columns_from_trl_messages_match_the_native_rollout(tiny_tokenizer):
    tok = tiny_tokenizer
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6*7"}}}
    completions = [
        [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": "calculator", "content": "42"},
            {"role": "assistant", "content": "The answer is 42."},
        ],
        [{"role": "assistant", "content": "", "tool_calls": [call]}],  # out of turns: unfinished
    ]
    ids = [
        tok("x<|im_end|>", add_special_tokens=False)["input_ids"],
        tok("x", add_special_tokens=False)["input_ids"],
    ]
    cols = trl_rollout_columns(completions, ids, tok)
    assert cols["texts"][0] == "The answer is 42." and cols["turns"] == [2, 1]
    assert cols["tool_calls"][0] == [
        {"name": "calculator", "arguments": {"expression": "6*7"}, "response": "42"}
    ]
    assert cols["tool_calls"][1] == []  # a call that never got a response is not a made call
    assert cols["finished"] == [True, False]
    assert "<tool_call>" in cols["texts"][1]
