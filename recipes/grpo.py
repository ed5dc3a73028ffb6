"""GRPO (and CISPO / DAPO / Dr. GRPO) with rule rewards, with trl's ``GRPOTrainer`` or our native trainer.

    accelerate launch recipes/grpo.py --config recipes/configs/tiny/grpo.yaml
    accelerate launch recipes/grpo.py --config recipes/configs/tiny/grpo.yaml --backend native
    accelerate launch -m minimind_hf.recipes.grpo --config ...          # after pip install

Prompts come from `load_split("rl", ...)` (``prompt`` messages + ``ground_truth``); every dataset column
reaches the reward functions as a keyword list, one value per completion (trl's convention, which the native
trainer follows too). Rewards are picked by name from `minimind_hf.rewards` (``rewards: [accuracy,
think_format]``, ``reward_options: {length: {max_length: 256}}``) and weighted by trl's ``reward_weights``.

Batch semantics (the one thing that differs between the two vocabularies):

- trl: ``per_device_train_batch_size`` counts *completions* per process per micro-step; one generation
  covers ``steps_per_generation`` (default ``gradient_accumulation_steps``) micro-steps, i.e.
  ``per_device_train_batch_size * processes * gradient_accumulation_steps / num_generations`` prompts per
  optimiser step, each sampled ``num_generations`` times.
- native: ``batch_size`` counts *prompts* per micro-batch, each sampled ``num_generations`` times.

So the recipe gives the native trainer ``batch_size = per_device_train_batch_size / num_generations`` (the
same prompts and completions per optimiser step). When ``per_device_train_batch_size`` is not a multiple of
``num_generations`` but ``per_device_train_batch_size * gradient_accumulation_steps`` is, the native run
takes the whole step in one micro-batch (same step, more memory); otherwise it is an error. The original's
"2 prompts x 6 samples" is ``per_device_train_batch_size: 12, num_generations: 6``.

======================================  =====================================================
trl key (GRPOConfig) / recipe key       native key (minimind_hf.native.grpo.GRPOConfig)
======================================  =====================================================
per_device_train_batch_size             batch_size = per_device_train_batch_size / num_generations
num_generations                         num_generations
max_completion_length                   max_new_tokens
max_prompt_length (recipe key)          max_prompt_length (trl 1.16 does not truncate prompts)
temperature, top_p                      same names
beta                                    beta (k3 KL; 0 = no reference model)
epsilon / epsilon_high                  epsilon_low / epsilon_high (None = epsilon)
loss_type                               loss_type (grpo, bnpo, dr_grpo, dapo, cispo)
scale_rewards                           scale_rewards (group, batch, none)
use_bias_correction_kl                  kl_ratio_correction
num_iterations                          num_iterations
reward_weights                          reward_weights
rewards, reward_options (recipe keys)   rewards, reward_options
open_thinking (recipe key) or           open_thinking
chat_template_kwargs.open_thinking
max_records (recipe)                    max_prompts
steps_per_generation /                  must be one generation per optimiser step (the default)
generation_batch_size
======================================  =====================================================

Known differences that remain: trl scales ``scale_rewards: batch`` by the std of the whole generation batch,
the native trainer by the std of its micro-batch; trl renders per-record ``tools`` only when the recipe
turns the prompts into text (it does so when any record has tools).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native

logger = logging.getLogger("minimind_hf.recipes")


@dataclass
class RLArguments:
    """Recipe keys shared by the on-policy RL recipes (grpo, rloo, ppo)."""

    rewards: list[str] = field(
        default_factory=lambda: ["accuracy", "think_format"],
        metadata={
            "help": "reward functions by name from minimind_hf.rewards (accuracy, think_format, length, repetition, "
            "reward_model)"
        },
    )
    reward_options: str | None = field(
        default=None,
        metadata={
            "help": "options bound to the rewards: a YAML mapping {name: {option: value}} or a JSON/YAML string"
        },
    )
    open_thinking: bool = field(
        default=False,
        metadata={
            "help": "prompts end in '<think>\\n' (the model writes its reasoning); false = closed empty think block"
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "native backend: prompts are cut from the left to this many tokens (default 512); trl 1.16 does "
            "not truncate prompts"
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
    """Unknown reward names (listing the valid ones), bad options, a weights list of the wrong length."""
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
    return p


def reward_funcs(rl_args: RLArguments) -> list:
    from minimind_hf.rewards import get_rewards

    return get_rewards(list(rl_args.rewards), reward_options_dict(rl_args))


def open_thinking(rl_args: RLArguments, training_args: Any) -> bool:
    """Our ``open_thinking`` key, or trl's ``chat_template_kwargs: {open_thinking: true}``."""
    kwargs = getattr(training_args, "chat_template_kwargs", None) or {}
    return bool(rl_args.open_thinking or (isinstance(kwargs, dict) and kwargs.get("open_thinking")))


def trl_prompts(records, tokenizer, think: bool):
    """The rl records as trl wants them: conversational ``prompt`` (trl renders it with ``chat_template_kwargs``),
    or -- when any record carries its own tool schemas, which trl 1.16 would not render -- the prompt text
    rendered exactly as the native trainer renders it."""
    from minimind_hf.native.rl_common import render_prompt

    if "tools" in records.column_names and any(records["tools"]):
        logger.info("records carry tool schemas: prompts are rendered to text (as the native trainer does)")
        return records.map(lambda r: {"prompt": render_prompt(tokenizer, r["prompt"], r["tools"], think)})
    return records.with_transform(_drop_none_keys)


def _drop_none_keys(batch: dict) -> dict:
    """Messages without their null fields (Arrow gives every message every key, e.g. ``tool_calls: None``,
    which trl's ``log_completions`` printer iterates)."""
    batch = dict(batch)
    batch["prompt"] = [
        [{k: v for k, v in m.items() if v is not None} for m in messages] for messages in batch["prompt"]
    ]
    return batch


def native_rl_problems(training_args: Any) -> list[str]:
    """trl generation options that would change what the native trainer computes."""
    t, p = training_args, []
    if t.steps_per_generation != t.gradient_accumulation_steps:
        p.append(
            f"steps_per_generation {t.steps_per_generation} (or generation_batch_size {t.generation_batch_size})"
            ": the native trainer samples one rollout per optimiser step; leave both unset"
        )
    for name, default in (
        ("top_k", 0),
        ("min_p", None),
        ("repetition_penalty", 1.0),
        ("use_vllm", False),
        ("mask_truncated_completions", False),
        ("generation_kwargs", None),
    ):
        if getattr(t, name, default) != default:
            p.append(f"{name}={getattr(t, name)!r}: not supported by the native trainer (use backend: trl)")
    kwargs = t.chat_template_kwargs or {}
    if isinstance(kwargs, dict) and set(kwargs) - {"open_thinking"}:
        p.append(
            f"chat_template_kwargs {sorted(set(kwargs) - {'open_thinking'})}: the native trainer only knows "
            "open_thinking"
        )
    return p


def native_batch_keys(training_args: Any, problems: list[str]) -> dict[str, int]:
    """trl's completions per micro-step -> native prompts per micro-batch (see the module docstring)."""
    t, G = training_args, training_args.num_generations
    if t.per_device_train_batch_size % G == 0:
        return {
            "batch_size": t.per_device_train_batch_size // G,
            "grad_accum_steps": t.gradient_accumulation_steps,
        }
    step = t.per_device_train_batch_size * t.gradient_accumulation_steps
    if step % G == 0:
        logger.info(
            "backend native: %d completions per process and step = %d prompts x %d samples in one "
            "micro-batch",
            step,
            step // G,
            G,
        )
        return {"batch_size": step // G, "grad_accum_steps": 1}
    problems.append(
        f"per_device_train_batch_size {t.per_device_train_batch_size} (x gradient_accumulation_steps "
        f"{t.gradient_accumulation_steps}) is not a multiple of num_generations {G}: the native trainer "
        "samples whole groups per process"
    )
    return {"batch_size": 1, "grad_accum_steps": 1}


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None) -> None:
    rl_args = rl_args or RLArguments()
    common.prepare_runtime(recipe_args)
    problems = reward_problems(rl_args, training_args.reward_weights)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model="GRPO starts from an SFT folder (e.g. the sft recipe's output_dir)",
    )
    think = open_thinking(rl_args, training_args)
    if recipe_args.backend == "native":
        t = training_args
        problems = native_rl_problems(t)
        if t.importance_sampling_level != "token":
            problems.append("importance_sampling_level: the native trainer uses token-level ratios")
        if t.delta is not None:
            problems.append("delta (two-sided clipping): not supported by the native trainer")
        if t.multi_objective_aggregation != "sum_then_normalize" and len(rl_args.rewards) > 1:
            problems.append(
                "multi_objective_aggregation: the native trainer sums the weighted rewards, then "
                "normalises (sum_then_normalize)"
            )
        keys = native_batch_keys(t, problems)
        keys.update(
            {
                "rewards": list(rl_args.rewards),
                "reward_options": reward_options_dict(rl_args),
                "reward_weights": list(t.reward_weights or []),
                "num_generations": t.num_generations,
                "max_new_tokens": t.max_completion_length,
                "temperature": t.temperature,
                "top_p": t.top_p,
                "beta": t.beta,
                "epsilon_low": t.epsilon,
                "epsilon_high": t.epsilon if t.epsilon_high is None else t.epsilon_high,
                "loss_type": t.loss_type,
                "scale_rewards": t.scale_rewards,
                "kl_ratio_correction": bool(t.use_bias_correction_kl),
                "num_iterations": t.num_iterations,
                "open_thinking": think,
                "max_prompts": recipe_args.max_records,
            }
        )
        if rl_args.max_prompt_length:
            keys["max_prompt_length"] = rl_args.max_prompt_length
        run_native(
            "grpo",
            recipe_args,
            training_args,
            model_args,
            keys,
            problems=problems,
            stage_mapped={
                "num_generations",
                "max_completion_length",
                "temperature",
                "top_p",
                "beta",
                "epsilon",
                "epsilon_high",
                "loss_type",
                "scale_rewards",
                "use_bias_correction_kl",
                "num_iterations",
                "reward_weights",
                "chat_template_kwargs",
                "generation_batch_size",
                "steps_per_generation",
                "remove_unused_columns",
                "log_completions",
                "num_completions_to_print",
                "ds3_gather_for_generation",
                "disable_dropout",
                "pad_to_multiple_of",
                "num_generations_eval",
            },
        )
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    from trl import GRPOTrainer

    run_trl(GRPOTrainer, recipe_args, training_args, model_args, rl_args, think)


def run_trl(
    trainer_cls: type, recipe_args, training_args, model_args, rl_args: RLArguments, think: bool
) -> None:
    """The trl side of grpo.py and rloo.py: prompts, registry rewards, ``trainer_cls`` (GRPO/RLOO), save."""
    if rl_args.max_prompt_length:
        logger.warning(
            "max_prompt_length=%d: trl 1.16's %s does not truncate prompts (native only)",
            rl_args.max_prompt_length,
            trainer_cls.__name__,
        )
    if think:
        training_args.chat_template_kwargs = {
            **(training_args.chat_template_kwargs or {}),
            "open_thinking": True,
        }
    tokenizer = common.load_tokenizer_for(recipe_args, model_args)
    train, evaluation = common.load_split("rl", recipe_args, training_args.seed)
    model = common.build_or_load_model(recipe_args, model_args, tokenizer, training_args.trust_remote_code)
    trainer = common.native_weight_decay(trainer_cls)(
        model=model,
        reward_funcs=reward_funcs(rl_args),
        args=training_args,
        train_dataset=trl_prompts(train, tokenizer, think),
        eval_dataset=trl_prompts(evaluation, tokenizer, think) if evaluation is not None else None,
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    common.save_final(trainer, training_args.output_dir)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl GRPOConfig, trl ModelConfig, RLArguments) from ``--config FILE`` and ``--key value``."""
    from trl import GRPOConfig

    return common.parse_recipe(GRPOConfig, argv, extra_dataclasses=(RLArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
