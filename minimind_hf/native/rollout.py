"""The one rollout engine: render prompts, sample batched, run tool calls between turns, decode, score.

Every on-policy trainer (GRPO, PPO), the quickstart's held-out evaluation and the stages' eval rewards call
this module; nothing else samples completions::

    r = rollout(model, tokenizer, records, num_samples=4, max_new_tokens=64, tools=get_tools(["calculator"]))
    r.input_ids, r.attention_mask     # (N, P+K): left-padded prompts + right-padded completions,
                                      # N = rows x samples
    r.policy_mask                     # (N, K): 1 on tokens the policy sampled,
                                      # 0 on tool responses and padding
    totals, per_reward = score(r, reward_funcs, weights)      # (N,), {name: (N,)}

Rows are prompt-major (``[p0 s0, p0 s1, ..., p1 s0, ...]``), so a GRPO group is contiguous.

Multi-turn (``tools`` given, ``max_turns > 1``): when a sample's turn ends in ``<|im_end|>`` after
``<tool_call>`` blocks (parsed by the server's parser, `minimind_hf.serve.parser`), each call runs through
`minimind_hf.tools.run_tool_call`, the responses are appended exactly as the chat template renders ``tool``
messages followed by the next generation prompt, and that row alone continues, until a turn without a call,
the turn budget, or ``max_new_tokens`` completion tokens in all. The budget counts tool-response tokens too,
as trl's ``max_completion_length`` does: a response that would not fit is dropped and the row ends there, its
call unanswered (trl does the same), so both backends see the same rollouts. Tool-response tokens are context:
they are in ``attention_mask`` but never in ``policy_mask``, so no loss is taken on them. Rewards score the
final turn's text (``texts``); every row's calls and responses (``tool_calls``), its number of turns and its
whole decoded completion (``transcripts``) reach the reward functions as keyword columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..data.rendering import render_prompt
from .rl_common import completion_mask_from_ids, pad

logger = logging.getLogger(__name__)

__all__ = [
    "Rollout",
    "prompt_token_ids",
    "rollout",
    "rollout_for",
    "sample_completions",
    "score",
    "tool_continuation",
    "tool_settings",
]

RewardFn = Callable[..., list[float]]


@dataclass
class Rollout:
    """One batch of sampled completions (see the module docstring for the shapes)."""

    prompt_ids: torch.Tensor  # (N, P) left-padded
    prompt_mask: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, K) right-padded: sampled tokens and tool responses
    completion_mask: torch.Tensor  # (N, K) 1 on every real completion token (attention)
    policy_mask: torch.Tensor  # (N, K) 1 on sampled tokens only (the loss mask)
    texts: list[str]  # the final turn's text per row (what rewards score)
    transcripts: list[str]  # the whole completion per row, tool responses included
    policy_token_ids: list[list[int]]  # the sampled tokens per row, all turns
    turns: list[int]  # turns per row (1 = no tool call ran)
    tool_calls: list[list[dict]]  # per row: [{"name", "arguments", "response"}, ...]
    finished: list[bool]  # the last turn ended in eos without a call left to run (not out of turns / tokens)
    columns: dict[str, list] = field(default_factory=dict)  # dataset columns per row, + "prompts"

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # (N, P+K)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)  # (N, P+K)


def prompt_token_ids(
    tokenizer, records: Sequence[dict], open_thinking: bool = False, max_prompt_length: int | None = None
) -> list[list[int]]:
    """Each record's ``prompt`` (+ ``tools``) rendered with the generation prompt and tokenized; prompts
    longer than `max_prompt_length` keep their last tokens (the generation prompt must survive)."""
    texts = [render_prompt(tokenizer, r["prompt"], r.get("tools"), open_thinking) for r in records]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return [i[-max_prompt_length:] for i in ids] if max_prompt_length else ids


@torch.no_grad()
def sample_completions(
    model,
    prompt_ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    eos_token_id: int | Sequence[int],
    num_samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generation_chunk: int = 8,
) -> dict[str, torch.Tensor]:
    """One turn: ``num_samples`` completions per prompt, ``generation_chunk`` rows at a time, with the KV
    cache (``generate``); temperature 0 is greedy.

    Returns left-padded ``prompt_ids``/``prompt_mask`` (N, P) and right-padded ``completion_ids``/
    ``completion_mask`` (N, K) with the mask covering tokens up to and including the first eos."""
    was_training = model.training
    model.eval()
    rows = [list(p) for p in prompt_ids for _ in range(num_samples)]
    p_ids, p_mask = pad(rows, pad_token_id, side="left")  # (N, P)
    device = next(model.parameters()).device
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    outs = []
    for start in range(0, len(rows), generation_chunk):
        ids, mask = p_ids[start : start + generation_chunk], p_mask[start : start + generation_chunk]
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None,
            top_k=top_k,  # 0 = off; None would let the model's generation_config (top_k 50) truncate sampling
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
        )
        outs.append(gen[:, ids.size(1) :])  # (b, k) completion part only
    width = max(o.size(1) for o in outs)
    c_ids = torch.cat([F.pad(o, (0, width - o.size(1)), value=pad_token_id) for o in outs], dim=0)  # (N, K)
    c_mask = completion_mask_from_ids(c_ids, eos_token_id)
    c_ids = c_ids.masked_fill(c_mask == 0, pad_token_id)
    model.train(was_training)
    return {"prompt_ids": p_ids, "prompt_mask": p_mask, "completion_ids": c_ids, "completion_mask": c_mask}


def tool_continuation(
    tokenizer, record: dict, calls: Sequence[dict], responses: Sequence[str], open_thinking: bool = False
) -> str:
    """The text the chat template writes after an assistant turn that made `calls`: the ``tool`` messages with
    `responses`, then the next generation prompt. Derived from the template itself (render with and without
    the tool messages), so it is exactly what an SFT conversation with those messages contains."""
    tools = record.get("tools") or None
    assistant = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls
        ],
    }
    head = list(record["prompt"]) + [assistant]
    before = tokenizer.apply_chat_template(head, tools=tools, tokenize=False)
    after = tokenizer.apply_chat_template(
        head + [{"role": "tool", "content": r} for r in responses],
        tools=tools,
        tokenize=False,
        add_generation_prompt=True,
        open_thinking=open_thinking,
    )
    eos = tokenizer.eos_token
    if not after.startswith(before) or eos not in before:
        raise ValueError("the chat template does not render tool messages after the assistant turn")
    # `before` ends with the assistant's eos and what the template writes after it; the model sampled the eos
    return after[before.rindex(eos) + len(eos) :]


def _tool_context(
    tokenizer, record: dict, calls: list[dict], open_thinking: bool, max_tokens: int
) -> list[int]:
    """The token ids of `tool_continuation`, responses shortened (halved) until it fits in `max_tokens`."""
    responses = [c["response"] for c in calls]
    while True:
        text = tool_continuation(tokenizer, record, calls, responses, open_thinking)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens or not any(responses):
            return ids
        responses = [r[: len(r) // 2] for r in responses]


def _columns(records: Sequence[dict], num_samples: int) -> dict[str, list]:
    """Dataset columns repeated per sample (trl's convention for reward functions), plus ``prompts``."""
    keys = [k for k in (records[0] if records else {}) if k != "prompt"]
    columns = {k: [r.get(k) for r in records for _ in range(num_samples)] for k in keys}
    columns["prompts"] = [r["prompt"] for r in records for _ in range(num_samples)]
    return columns


@torch.no_grad()
def rollout(
    model,
    tokenizer,
    records: Sequence[dict],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generation_chunk: int = 8,
    max_prompt_length: int | None = None,
    open_thinking: bool | Sequence[bool] = False,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    max_turns: int = 1,
    max_tool_response_tokens: int = 128,
) -> Rollout:
    """Sample `num_samples` completions for each ``rl`` record (``prompt`` messages, optional ``tools``
    schemas, any other columns), running tool calls between turns when `tools` are given
    (see the module docstring).
    `open_thinking`: for every row, or one flag per row (``len(records) * num_samples``, see
    `thinking_modes`)."""
    from ..tools import tool_schemas

    if tools:  # the model must see what it can call: records without their own schemas get the tools'
        schemas = tool_schemas(tools)
        records = [r if r.get("tools") else {**r, "tools": schemas} for r in records]
    prompts, think = _prompt_rows(tokenizer, records, num_samples, open_thinking, max_prompt_length)
    rows = _Rows(prompts, think, [r for r in records for _ in range(num_samples)])
    multi_turn = bool(tools) and max_turns > 1
    active = list(range(len(prompts)))
    for turn in range(max_turns if multi_turn else 1):
        budget = {i: max_new_tokens - len(rows.completion[i]) for i in active}
        active = [i for i in active if budget[i] > 0]
        if not active:
            break
        s = sample_completions(
            model,
            [prompts[i] + rows.completion[i] for i in active],
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=max(budget[i] for i in active),
            temperature=temperature,
            top_p=top_p,
            generation_chunk=generation_chunk,
        )
        still = []
        for j, i in enumerate(active):
            new = s["completion_ids"][j][s["completion_mask"][j].bool()].tolist()[: budget[i]]
            calls = rows.add_turn(tokenizer, i, turn, new, parse_calls=multi_turn)
            if not calls or turn + 1 >= max_turns or len(rows.completion[i]) >= max_new_tokens:
                continue  # done: a final answer, or calls with no turn / token left to answer them
            if rows.answer_calls(tokenizer, i, calls, tools, max_new_tokens, max_tool_response_tokens):
                still.append(i)
        active = still
    return rows.as_rollout(tokenizer, next(model.parameters()).device, _columns(records, num_samples))


class _Rows:
    """Each rollout row's growing completion (sampled tokens, then tool responses, turn by turn) and what
    happened in it; `rollout` drives the turns."""

    def __init__(self, prompts: list[list[int]], think: list[bool], records: list[dict]):
        n = len(prompts)
        self.prompts, self.think, self.records = prompts, think, records
        self.completion: list[list[int]] = [[] for _ in range(n)]
        self.policy: list[list[int]] = [[] for _ in range(n)]  # 1 = sampled, 0 = tool response
        self.texts, self.turns = [""] * n, [0] * n
        self.calls_made: list[list[dict]] = [[] for _ in range(n)]
        self.finished = [False] * n

    def add_turn(self, tokenizer, i: int, turn: int, new: list[int], parse_calls: bool) -> list:
        """Append row `i`'s sampled tokens; return the tool calls its turn ended with (parsed when asked)."""
        from ..serve.parser import parse_output

        self.completion[i] += new
        self.policy[i] += [1] * len(new)
        self.turns[i] = turn + 1
        self.texts[i] = tokenizer.decode(new, skip_special_tokens=True)
        logger.debug("rollout row %d turn %d: %r", i, turn + 1, self.texts[i][:200])
        ended = bool(new) and new[-1] == tokenizer.eos_token_id
        calls = []
        if parse_calls and ended:
            calls = parse_output(self.texts[i], reasoning=self.think[i], parse_tool_calls=True)["tool_calls"]
        self.finished[i] = ended and not calls
        return calls

    def answer_calls(
        self, tokenizer, i: int, calls: list, tools, max_new_tokens: int, max_response_tokens: int
    ) -> bool:
        """Run row `i`'s calls and append the responses as the template renders them; False when they would
        not fit the completion budget (the row then ends, its calls unanswered)."""
        from ..tools import run_tool_call

        made = [{"name": c.name, "arguments": c.arguments} for c in calls]
        for call in made:
            call["response"] = run_tool_call(tools, call["name"], call["arguments"])
        context = _tool_context(tokenizer, self.records[i], made, self.think[i], max_response_tokens)
        if len(self.completion[i]) + len(context) > max_new_tokens:
            return False
        self.calls_made[i] += made
        self.completion[i] += context
        self.policy[i] += [0] * len(context)
        return True

    def as_rollout(self, tokenizer, device, columns: dict[str, list]) -> Rollout:
        pad_id = tokenizer.pad_token_id
        c_ids, c_mask = pad(self.completion, pad_id, side="right")  # (N, K)
        policy_mask, _ = pad(self.policy, 0, side="right")
        p_ids, p_mask = pad(self.prompts, pad_id, side="left")
        return Rollout(
            prompt_ids=p_ids.to(device),
            prompt_mask=p_mask.to(device),
            completion_ids=c_ids.to(device),
            completion_mask=c_mask.to(device),
            policy_mask=policy_mask.to(device),
            texts=self.texts,
            transcripts=tokenizer.batch_decode(self.completion, skip_special_tokens=True),
            policy_token_ids=[
                [t for t, m in zip(c, q, strict=True) if m]
                for c, q in zip(self.completion, self.policy, strict=True)
            ],
            turns=self.turns,
            tool_calls=self.calls_made,
            finished=self.finished,
            columns=columns,
        )


def _prompt_rows(
    tokenizer, records: Sequence[dict], num_samples: int, open_thinking, max_prompt_length: int | None
) -> tuple[list[list[int]], list[bool]]:
    """The prompt ids of every rollout row (each record's `num_samples` rows in a row) and each row's
    ``open_thinking``; a prompt is rendered once per mode it is drawn in."""
    n = len(records) * num_samples
    think = [open_thinking] * n if isinstance(open_thinking, bool) else [bool(t) for t in open_thinking]
    if len(think) != n:
        raise ValueError(f"open_thinking has {len(think)} flags for {n} rollout rows")
    rendered: dict[tuple[int, bool], list[int]] = {}
    for i in range(n):
        key = (i // num_samples, think[i])
        if key not in rendered:
            rendered[key] = prompt_token_ids(tokenizer, [records[key[0]]], key[1], max_prompt_length)[0]
    return [rendered[i // num_samples, think[i]] for i in range(n)], think


def tool_settings(cfg) -> dict:
    """The rollout's tool arguments from a stage config (none for single-turn stages)."""
    from ..tools import get_tools

    names = list(getattr(cfg, "tools", []) or [])
    if not names:
        return {}
    return {
        "tools": get_tools(names),
        "max_turns": cfg.max_turns,
        "max_tool_response_tokens": cfg.max_tool_response_tokens,
    }


def thinking_modes(cfg, n_records: int, num_samples: int, greedy: bool = False) -> bool | list[bool]:
    """``open_thinking`` for each rollout row of a stage config: its ``open_thinking``, or, with
    ``thinking_ratio`` set, a draw per prompt (all its samples alike, so a group compares answers, not modes;
    per sample where the stage sets ``thinking_per_sample``, like the original's agent RL) that opens the
    think block with that probability. Torch's RNG draws it (the checkpoint restores it); greedy evaluation
    draws from the seed alone, so every evaluation sees the same prompts."""
    ratio = getattr(cfg, "thinking_ratio", None)
    if ratio is None:
        return cfg.open_thinking
    generator = torch.Generator().manual_seed(cfg.seed) if greedy else None
    if getattr(cfg, "thinking_per_sample", False):
        return (torch.rand(n_records * num_samples, generator=generator) < ratio).tolist()
    per_prompt = (torch.rand(n_records, generator=generator) < ratio).tolist()
    return [t for t in per_prompt for _ in range(num_samples)]


def rollout_for(
    cfg, policy, tokenizer, records: Sequence[dict], num_samples: int = 1, greedy: bool = False
) -> Rollout:
    """`rollout` with a stage config's sampling, prompt and tool settings (GRPO, PPO, SPO, agent)."""
    return rollout(
        policy,
        tokenizer,
        records,
        num_samples=num_samples,
        max_new_tokens=cfg.max_new_tokens,
        temperature=0.0 if greedy else cfg.temperature,
        top_p=cfg.top_p,
        generation_chunk=cfg.generation_chunk,
        max_prompt_length=cfg.max_prompt_length,
        open_thinking=thinking_modes(cfg, len(records), num_samples, greedy),
        **tool_settings(cfg),
    )


def score(
    r: Rollout, reward_funcs: Sequence[RewardFn], weights: Sequence[float] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(weighted total (N,), {reward name: (N,)})``: every function gets the final texts, the sampled token
    ids, the dataset columns and the rollout's ``tool_calls`` / ``turns`` / ``transcripts`` / ``finished``."""
    extra = {
        "tool_calls": r.tool_calls,
        "turns": r.turns,
        "transcripts": r.transcripts,
        "finished": r.finished,
    }
    per = {}
    for i, f in enumerate(reward_funcs):
        name = getattr(f, "__name__", str(i))
        values = f(r.texts, completion_ids=r.policy_token_ids, **r.columns, **extra)
        per[name] = torch.tensor(values, dtype=torch.float32)
    weights = torch.tensor(list(weights) if weights else [1.0] * len(per), dtype=torch.float32)
    total = (
        (torch.stack(list(per.values()), dim=1) * weights).sum(dim=1) if per else torch.zeros(len(r.texts))
    )
    return total, per
