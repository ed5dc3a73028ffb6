"""The rollout engine: one turn equals transformers' own greedy generate; a multi-turn tool-use rollout
reproduces, token for token, what the chat template renders for the same conversation, with the policy mask
equal to the template's assistant mask (tool responses are context, never trained)."""

from __future__ import annotations

import torch
from _native_helpers import TOOL_CONVERSATION as CONVERSATION
from _native_helpers import TOOL_PROMPT as PROMPT
from _native_helpers import rl_inputs, tiny_lm
from _tool_models import memorise

from minimind_hf import MiniMindForCausalLM
from minimind_hf.native.rollout import rollout, score
from minimind_hf.tools import get_tools, tool_schemas


def test_one_turn_equals_transformers_greedy_generate(tiny_tokenizer):
    tok, model = tiny_tokenizer, tiny_lm(tiny_tokenizer, 1).eval()
    records = [
        {"prompt": [{"role": "user", "content": q}], "ground_truth": "2"} for q in ("1 + 1 = ?", "hello")
    ]
    r = rollout(model, tok, records, num_samples=2, max_new_tokens=12, temperature=0.0)
    assert r.input_ids.shape[0] == 4 and torch.equal(r.policy_mask, r.completion_mask)
    for row, record in enumerate([records[0], records[0], records[1], records[1]]):
        prompt = tok.apply_chat_template(
            record["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        ref = model.generate(
            prompt,
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )[0, prompt.shape[1] :].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        got = r.completion_ids[row][r.completion_mask[row].bool()].tolist()
        assert got == ref, row
        assert r.texts[row] == tok.decode(ref, skip_special_tokens=True) and r.turns[row] == 1
    assert r.columns["ground_truth"] == ["2", "2", "2", "2"]


def test_tool_call_rollout_is_the_template_rendering_with_its_assistant_mask(tiny_tokenizer):
    tok, model = tiny_tokenizer, tiny_lm(tiny_tokenizer)
    tools = get_tools(["calculator"])
    memorise(model, tok, CONVERSATION, tool_schemas(tools))
    r = rollout(
        model, tok, [{"prompt": PROMPT}], max_new_tokens=120, temperature=0.0, tools=tools, max_turns=3
    )

    assert r.turns == [2]
    assert r.tool_calls == [[{"name": "calculator", "arguments": '{"expression": "6*7"}', "response": "42"}]]
    assert r.texts == ["The answer is 42."]
    # the independent reference: the chat template's rendering of the same conversation and its generation
    # mask
    enc = tok.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    prompt_len = len(
        tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True)["input_ids"]
    )
    ref_ids, ref_mask = enc["input_ids"][prompt_len:], enc["assistant_masks"][prompt_len:]
    while ref_ids and ref_mask[-1] == 0:  # the newline the template writes after the final <|im_end|>
        ref_ids, ref_mask = ref_ids[:-1], ref_mask[:-1]
    valid = r.completion_mask[0].bool()
    assert r.completion_ids[0][valid].tolist() == ref_ids
    assert r.policy_mask[0][valid].tolist() == ref_mask
    assert 0 < r.policy_mask.sum() < r.completion_mask.sum()  # the tool response is context only

    def used_the_tool(completions, tool_calls, **kwargs):
        return [float(any(c["response"] == "42" for c in calls)) for calls in tool_calls]

    total, per = score(r, [used_the_tool])
    assert total.tolist() == [1.0] and set(per) == {"used_the_tool"}


def test_without_tools_a_tool_call_ends_the_rollout(tiny_tokenizer):
    tok, model = tiny_tokenizer, tiny_lm(tiny_tokenizer)
    memorise(model, tok, CONVERSATION, None)
    r = rollout(model, tok, [{"prompt": PROMPT}], max_new_tokens=80, temperature=0.0)
    assert r.turns == [1] and r.tool_calls == [[]] and "<tool_call>" in r.texts[0]


def test_agent_stage_trains_on_multi_turn_rollouts(tmp_path, tiny_tokenizer):
    """`agent` (GRPO/CISPO + tools): every step's rollouts run the calculator, the agent rewards score them,
    and the weights change; nothing is trained on tool tokens (the rollout test above checks the mask)."""
    import json

    from _native_helpers import base_config

    from minimind_hf.native.agent import AgentConfig, run_agent
    from minimind_hf.native.config import load_config

    model = tiny_lm(tiny_tokenizer)
    memorise(model, tiny_tokenizer, CONVERSATION, tool_schemas(get_tools(["calculator"])))
    rows = [{"conversations": PROMPT + [{"role": "assistant", "content": ""}], "gt": ["42"]}] * 4
    base, data = rl_inputs(tmp_path, model, tiny_tokenizer, rows)
    cfg = load_config(
        AgentConfig,
        None,
        base_config(
            base,
            model=str(base),
            output_dir=str(tmp_path / "out"),
            data=[str(data)],
            batch_size=1,
            num_generations=2,
            max_new_tokens=120,
            max_steps=2,
            learning_rate=1e-4,
            beta=0.0,
            temperature=0.3,
        ),
    )
    result = run_agent(cfg)
    log = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    # the tool really ran in every step (sampled rows need not all call it)
    calls = [(r["turns"], r["tool_calls"]) for r in steps]
    assert all(turns > 1 and n > 0 for turns, n in calls), calls
    assert {"rewards/gt_coverage_reward", "rewards/tool_use_reward", "rewards/unfinished_reward"} <= set(
        steps[0]
    )
    assert result.steps == 2
    trained = MiniMindForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    before = model.state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in trained.items())


def _prompt_texts(tok, r) -> list[str]:
    return [tok.decode(ids[mask.bool()]) for ids, mask in zip(r.prompt_ids, r.prompt_mask, strict=True)]


def test_thinking_ratio_opens_the_think_block_for_that_share_of_prompts(tiny_tokenizer):
    """The original's thinking_ratio: each prompt drawn open (ends '<think>\\n', its samples alike) or closed
    (the empty block), rendered by the chat template exactly as open_thinking true / false render it."""
    from minimind_hf.native.grpo import GRPOConfig
    from minimind_hf.native.rollout import rollout_for, thinking_modes

    tok, model = tiny_tokenizer, tiny_lm(tiny_tokenizer, 1).eval()
    records = [{"prompt": [{"role": "user", "content": f"question {i}"}]} for i in range(40)]
    cfg = GRPOConfig(thinking_ratio=0.5, max_new_tokens=1, num_generations=2, seed=7)
    torch.manual_seed(0)
    r = rollout_for(cfg, model, tok, records, num_samples=2)
    texts = _prompt_texts(tok, r)
    rendered = {
        flag: [tok.apply_chat_template(x["prompt"], tokenize=False, add_generation_prompt=True,
                                       open_thinking=flag)
               for x in records]
        for flag in (True, False)
    }  # fmt: skip
    opened = []
    for i in range(40):
        a, b = texts[2 * i], texts[2 * i + 1]
        assert a == b  # a group shares its prompt
        assert a in (rendered[True][i], rendered[False][i])
        opened.append(a == rendered[True][i])
    assert 10 <= sum(opened) <= 30  # about half (binomial 40, 0.5)
    # the edges and the per-sample draw of the agent stage
    assert thinking_modes(GRPOConfig(thinking_ratio=1.0), 3, 2) == [True] * 6
    assert thinking_modes(GRPOConfig(thinking_ratio=0.0), 3, 2) == [False] * 6
    assert thinking_modes(GRPOConfig(open_thinking=True), 3, 2) is True
    from minimind_hf.native.agent import AgentConfig

    torch.manual_seed(1)
    per_sample = thinking_modes(AgentConfig(thinking_ratio=0.5), 20, 4)
    assert any(per_sample[4 * i : 4 * i + 4] not in ([True] * 4, [False] * 4) for i in range(20))
    # greedy evaluation draws from the seed only: the same prompts open every time
    cfg = GRPOConfig(thinking_ratio=0.5, seed=3)
    assert thinking_modes(cfg, 30, 1, greedy=True) == thinking_modes(cfg, 30, 1, greedy=True)


def test_thinking_ratio_is_validated():
    from minimind_hf.native.grpo import GRPOConfig
    from minimind_hf.native.ppo import PPOConfig

    for cls in (GRPOConfig, PPOConfig):
        assert any("thinking_ratio must be in [0, 1]" in p for p in cls(thinking_ratio=1.5).validate())
        both = cls(thinking_ratio=0.9, open_thinking=True).validate()
        assert any("open_thinking: true and thinking_ratio both set" in p for p in both)
        assert not [p for p in cls(thinking_ratio=0.9).validate() if "thinking" in p]
