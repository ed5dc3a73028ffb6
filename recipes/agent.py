"""Agentic RL: GRPO / CISPO on multi-turn rollouts in which the model calls tools, with trl's
``GRPOTrainer(tools=)`` or our native trainer (`minimind_hf.native.agent`).

    accelerate launch recipes/agent.py --config recipes/configs/tiny/agent.yaml
    accelerate launch recipes/agent.py --config recipes/configs/tiny/agent.yaml --backend trl
    minimind-hf train agent --config recipes/configs/tiny/agent.yaml
    accelerate launch -m minimind_hf.recipes.agent --config ...          # after pip install

The GRPO recipe's YAML (trl's ``GRPOConfig`` + `RLArguments`) with ``tools`` (names from `minimind_hf.tools`)
and trl's ``max_tool_calling_iterations`` (tool rounds; turns = iterations + 1). A sample's turn that ends in
``<tool_call>`` blocks gets the tools' responses appended as the chat template renders ``tool`` messages and
continues; only sampled tokens are trained (trl: ``tool_mask``; native: the rollout's ``policy_mask``).
Records: ``rl`` records with ``gt`` (a value or a list). Rewards from the registry: ``gt_coverage``,
``tool_use``, ``tool_format``, ``unfinished`` (and the single-turn ones); they read the rollout's
``tool_calls``, ``transcripts`` and ``finished`` columns, which `trl_rollout_columns` rebuilds from trl's
completion messages.

Both backends run the same tool functions the same way: a call that raises or has bad arguments answers with
an ``error: ...`` text (`minimind_hf.tools.run_tool_call`), so the ``tool_use`` reward counts it as failed on
both. The tokenizer's ``response_template`` (MiniMind's, `minimind_hf.tokenizer.RESPONSE_TEMPLATE`; set here
when an older tokenizer lacks it) is what trl parses the calls with.

Differences that remain: trl shows the named tools' schemas to every prompt (records carrying their own
``tools`` are refused under trl); ``max_tool_response_tokens`` is native only (trl drops a tool result that
would overflow ``max_completion_length`` instead of shortening it); trl's ``completion_ids`` given to rewards
include the tool-response tokens, the native ones only the sampled tokens.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native, trl_refusals
from minimind_hf.recipes.rl_shared import (
    RLArguments,
    drop_none_keys,
    open_thinking,
    reward_funcs,
    reward_problems,
)

NEEDS_MODEL = "agentic RL starts from an SFT folder that has seen tool calls"


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None) -> None:
    rl_args = rl_args or RLArguments()
    common.prepare_runtime(recipe_args)
    problems = reward_problems(rl_args, training_args.reward_weights)
    if recipe_args.backend == "trl":
        problems += trl_refusals("agent", rl_args) + _tool_problems(rl_args, training_args)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model=NEEDS_MODEL,
        stage="agent",
        stage_args=(rl_args,),
    )
    if recipe_args.backend == "native":
        run_native("agent", recipe_args, training_args, model_args, rl_args)
        return
    if common.dry_run(recipe_args, training_args, model_args):
        return
    run_trl_agent(recipe_args, training_args, model_args, rl_args)


def _tool_problems(rl_args: RLArguments, training_args) -> list[str]:
    """Under trl, what the native translation checks too: named tools that exist, and a turn bound (trl alone
    would loop until max_completion_length)."""
    from minimind_hf.tools import get_tools

    if not rl_args.tools:
        return ["tools: the agent recipe needs at least one tool (e.g. [calculator]); use grpo for one turn"]
    p = []
    try:
        get_tools(rl_args.tools)
    except KeyError as e:
        p.append(f"tools: {e.args[0]}")
    if training_args.max_tool_calling_iterations is None:
        p.append("tools: set max_tool_calling_iterations (e.g. 2 = up to 3 turns); the rollouts need a bound")
    return p


def trl_tools(names: list[str]) -> list:
    """The named registry tools as trl calls them (``fn(**arguments)``), answering errors as text the way the
    native rollout does (`run_tool_call` never raises), with the functions' signatures and docstrings kept for
    the schema trl renders."""
    from minimind_hf.tools import get_tools, run_tool_call

    def bound(name: str, fn):
        @functools.wraps(fn)
        def call(**arguments):
            return run_tool_call({name: fn}, name, arguments)

        return call

    return [bound(name, fn) for name, fn in get_tools(names).items()]


def trl_rollout_columns(completions: list[list[dict]], completion_ids: list[list[int]], tokenizer) -> dict:
    """The native rollout's reward columns from trl's multi-turn completions (lists of assistant / tool
    messages): ``texts`` (the final assistant turn as text), ``tool_calls`` ({name, arguments, response}),
    ``transcripts`` (the whole completion decoded), ``turns`` and ``finished`` (the rollout ended in an answer
    with the end-of-turn token, not in a call or a cut)."""
    eos = tokenizer.eos_token_id
    out: dict[str, list] = {"texts": [], "tool_calls": [], "transcripts": [], "turns": [], "finished": []}
    for messages, ids in zip(completions, completion_ids, strict=True):
        calls, pending = [], []
        for m in messages:
            if m.get("role") == "assistant":
                pending = [
                    {"name": c["function"]["name"], "arguments": c["function"].get("arguments")}
                    for c in m.get("tool_calls") or []
                ]
                calls += pending
            elif m.get("role") == "tool" and pending:
                pending.pop(0)["response"] = m.get("content")
        last = messages[-1] if messages else {}
        answered = last.get("role") == "assistant" and not last.get("tool_calls")
        out["texts"].append(_turn_text(last) if last.get("role") == "assistant" else "")
        out["tool_calls"].append([c for c in calls if "response" in c])
        out["transcripts"].append(tokenizer.decode(ids, skip_special_tokens=True))
        out["turns"].append(sum(m.get("role") == "assistant" for m in messages))
        out["finished"].append(bool(answered and ids and eos in ids))
    return out


def _turn_text(message: dict) -> str:
    """An assistant message as the model wrote it: content, then its calls as ``<tool_call>`` blocks."""
    text = message.get("content") or ""
    for c in message.get("tool_calls") or []:
        body = {"name": c["function"]["name"], "arguments": c["function"].get("arguments")}
        text += f"\n<tool_call>\n{json.dumps(body, ensure_ascii=False)}\n</tool_call>"
    return text


def agent_rewards(funcs: list, tokenizer) -> list:
    """Registry rewards wrapped for trl: each gets the final texts and the rollout columns, as natively."""

    def wrap(fn):
        def reward(prompts: list, completions: list, completion_ids: list, **kwargs: Any) -> list[float]:
            columns = trl_rollout_columns(completions, completion_ids, tokenizer)
            texts = columns.pop("texts")
            return fn(texts, completion_ids=completion_ids, **{**kwargs, **columns})

        reward.__name__ = getattr(fn, "__name__", "reward")
        return reward

    return [wrap(f) for f in funcs]


def run_trl_agent(recipe_args, training_args, model_args, rl_args: RLArguments) -> None:
    from trl import GRPOTrainer

    from minimind_hf.tokenizer import RESPONSE_TEMPLATE

    if open_thinking(rl_args, training_args):
        training_args.chat_template_kwargs = {
            **(training_args.chat_template_kwargs or {}),
            "open_thinking": True,
        }
    tokenizer = common.load_tokenizer_for(recipe_args, model_args)
    if getattr(tokenizer, "response_template", None) is None:  # tokenizers saved before we shipped one
        tokenizer.response_template = RESPONSE_TEMPLATE
    train, evaluation = common.load_split("rl", recipe_args, training_args.seed)
    for name, records in (("data", train), ("eval_data", evaluation)):
        if records is not None and "tools" in records.column_names and any(records["tools"]):
            raise common.RecipeError(
                f"{name}: records carry their own tool schemas; backend trl shows the named tools "
                f"{rl_args.tools} to every prompt. Drop the records' tools or use backend: native"
            )
    model = common.build_or_load_model(
        recipe_args, model_args, tokenizer, training_args.trust_remote_code, training_args.model_init_kwargs
    )
    trainer = common.native_optimizer(GRPOTrainer, recipe_args.optimizer)(
        model=model,
        reward_funcs=agent_rewards(reward_funcs(rl_args), tokenizer),
        args=training_args,
        train_dataset=train.with_transform(drop_none_keys),
        eval_dataset=evaluation.with_transform(drop_none_keys) if evaluation is not None else None,
        processing_class=tokenizer,
        peft_config=common.peft_config(model_args),
        tools=trl_tools(rl_args.tools),
    )
    common.train_and_save(trainer, "agent", recipe_args, training_args, model_args)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl GRPOConfig, trl ModelConfig, RLArguments) from ``--config FILE`` and
    ``--key value``."""
    from trl import GRPOConfig

    return common.parse_recipe(GRPOConfig, argv, extra_dataclasses=(RLArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
