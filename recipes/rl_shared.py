"""What the on-policy RL recipes share (grpo, rloo, ppo): their extra keys, registry rewards, trl prompts.

``RLArguments`` are our keys beside trl's config (``rewards``, ``reward_options``, ``open_thinking``,
``max_prompt_length``); `run_trl` is the trl side of grpo.py and rloo.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from minimind_hf.recipes import common

logger = logging.getLogger("minimind_hf.recipes")

__all__ = [
    "RLArguments",
    "open_thinking",
    "reward_funcs",
    "reward_options_dict",
    "reward_problems",
    "drop_none_keys",
    "run_trl",
]


@dataclass
class RLArguments:
    """Recipe keys shared by the on-policy RL recipes (grpo, rloo, ppo)."""

    rewards: list[str] = field(
        default_factory=lambda: ["accuracy", "think_format"],
        metadata={
            "help": "reward functions by name from minimind_hf.rewards (accuracy, think_format, length, "
            "repetition, reward_model)"
        },
    )
    reward_options: str | None = field(
        default=None,
        metadata={
            "help": "options bound to the rewards: a YAML mapping {name: {option: value}} or a "
            "JSON/YAML string"
        },
    )
    open_thinking: bool = field(
        default=False,
        metadata={
            "help": "prompts end in '<think>\\n' (the model writes its reasoning); "
            "false = closed empty think block"
        },
    )
    thinking_ratio: float | None = field(
        default=None,
        metadata={
            "help": "the share of prompts drawn to end in '<think>\\n' (the original's 0.9 for GRPO/PPO, 0.1 "
            "for agent RL, drawn per sample there); replaces open_thinking. Native: drawn per rollout; "
            "trl: once per record"
        },
    )
    tools: list[str] = field(
        default_factory=list,
        metadata={
            "help": "minimind_hf.tools names the rollouts run between turns (calculator, unit_convert, "
            "lookup, current_time); turns = max_tool_calling_iterations + 1. The agent recipe on both "
            "backends; grpo native only"
        },
    )
    max_tool_response_tokens: int = field(
        default=128,
        metadata={"help": "native backend: a tool turn's tokens at most (responses are shortened)"},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "native backend only: prompts are cut from the left to this many tokens (default 512); "
            "trl 1.16 does not truncate prompts"
        },
    )


def reward_options_dict(rl_args: RLArguments) -> dict[str, dict]:
    """``reward_options`` as ``{reward: {option: value}}`` (YAML mapping, JSON/YAML string, or flat
    ``name.option`` keys)."""
    import yaml

    from minimind_hf.native.grpo import parse_reward_options

    value = rl_args.reward_options
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if not isinstance(value, dict):
        raise ValueError(f"reward_options must be a mapping {{reward: {{option: value}}}}, got {value!r}")
    return parse_reward_options(value)


def reward_problems(rl_args: RLArguments, reward_weights: list[float] | None = None) -> list[str]:
    """Unknown reward names (listing the valid ones), bad options, a weights list of the wrong length, a bad
    ``thinking_ratio``."""
    from minimind_hf.native.rl_common import thinking_problems
    from minimind_hf.rewards import REWARDS, get_rewards

    names = list(rl_args.rewards or [])
    if not names:
        return [f"rewards: give at least one reward; valid: {', '.join(sorted(REWARDS))}"]
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        return [f"rewards: unknown {unknown}; valid: {', '.join(sorted(REWARDS))}"]
    p = []
    try:
        get_rewards(names, reward_options_dict(rl_args))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        p.append(f"reward_options: {e.args[0] if e.args else e}")
    except Exception as e:  # noqa: BLE001 - a YAML syntax error in a command-line string
        p.append(f"reward_options: {e}")
    if reward_weights and len(reward_weights) != len(names):
        p.append(f"reward_weights has {len(reward_weights)} values for {len(names)} rewards {names}")
    return p + thinking_problems(rl_args.open_thinking, rl_args.thinking_ratio)


def reward_funcs(rl_args: RLArguments) -> list:
    from minimind_hf.rewards import get_rewards

    return get_rewards(list(rl_args.rewards), reward_options_dict(rl_args))


def open_thinking(rl_args: RLArguments, training_args: Any) -> bool:
    """Our ``open_thinking`` key, or trl's ``chat_template_kwargs: {open_thinking: true}``."""
    kwargs = getattr(training_args, "chat_template_kwargs", None) or {}
    return bool(rl_args.open_thinking or (isinstance(kwargs, dict) and kwargs.get("open_thinking")))


def trl_prompts(records, tokenizer, think: bool, thinking_ratio: float | None = None, seed: int = 0):
    """The rl records as trl wants them: conversational ``prompt`` (trl renders it with
    ``chat_template_kwargs``), or the prompt text rendered exactly as the native trainer renders it -- when
    any record carries its own tool schemas (trl 1.16 would not render them), or with `thinking_ratio` (trl
    renders every prompt alike), drawn here once per record from `seed`."""
    import random

    from minimind_hf.data.rendering import render_prompt

    has_tools = "tools" in records.column_names and any(records["tools"])
    if not has_tools and thinking_ratio is None:
        return records.with_transform(drop_none_keys)
    if has_tools:
        logger.info("records carry tool schemas: prompts are rendered to text (as the native trainer does)")
    draws = random.Random(seed)
    modes = [
        think if thinking_ratio is None else draws.random() < thinking_ratio for _ in range(len(records))
    ]
    if thinking_ratio is not None:
        logger.info(
            "thinking_ratio %s: %d of %d prompts open the think block", thinking_ratio, sum(modes), len(modes)
        )
    return records.map(
        lambda r, i: {"prompt": render_prompt(tokenizer, r["prompt"], r.get("tools"), modes[i])},
        with_indices=True,
    )


def drop_none_keys(batch: dict) -> dict:
    """Messages without their null fields (Arrow gives every message every key, e.g. ``tool_calls: None``,
    which trl's ``log_completions`` printer iterates)."""
    batch = dict(batch)
    batch["prompt"] = [
        [{k: v for k, v in m.items() if v is not None} for m in messages] for messages in batch["prompt"]
    ]
    return batch


def run_trl(
    trainer_cls: type, recipe_args, training_args, model_args, rl_args: RLArguments, think: bool
) -> None:
    """The trl side of grpo.py and rloo.py: prompts, registry rewards, ``trainer_cls`` (GRPO/RLOO) with LoRA
    adapters when ``use_peft``, save."""
    if think:
        training_args.chat_template_kwargs = {
            **(training_args.chat_template_kwargs or {}),
            "open_thinking": True,
        }
    tokenizer = common.load_tokenizer_for(recipe_args, model_args)
    train, evaluation = common.load_split("rl", recipe_args, training_args.seed)
    model = common.build_or_load_model(
        recipe_args, model_args, tokenizer, training_args.trust_remote_code, training_args.model_init_kwargs
    )
    trainer = common.native_optimizer(trainer_cls, recipe_args.optimizer)(
        model=model,
        reward_funcs=reward_funcs(rl_args),
        args=training_args,
        train_dataset=trl_prompts(train, tokenizer, think, rl_args.thinking_ratio, training_args.seed),
        eval_dataset=(
            trl_prompts(evaluation, tokenizer, think, rl_args.thinking_ratio, training_args.seed)
            if evaluation is not None
            else None
        ),
        processing_class=tokenizer,
        peft_config=common.peft_config(model_args),
    )
    common.train_and_save(
        trainer, trainer_cls.__name__.removesuffix("Trainer").lower(), recipe_args, training_args, model_args
    )


def run_native_only(
    stage: str, no_trl: str, needs_model: str, recipe_args, training_args, model_args, rl_args, *extra
) -> None:
    """The main of an RL recipe with no trl backend (ppo, spo, agent):
    `no_trl` is the error for backend trl."""
    from minimind_hf.recipes.native_bridge import run_native

    common.prepare_runtime(recipe_args)
    problems = reward_problems(rl_args, getattr(training_args, "reward_weights", None))
    if recipe_args.backend == "trl":
        problems.insert(0, no_trl)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model=needs_model,
        stage=stage,
        stage_args=(rl_args, *extra),
    )
    run_native(stage, recipe_args, training_args, model_args, rl_args, *extra)
