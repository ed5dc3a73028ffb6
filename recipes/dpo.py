"""Direct Preference Optimisation on chosen/rejected pairs, with trl's ``DPOTrainer`` or our native trainer.

    accelerate launch recipes/dpo.py --config recipes/configs/tiny/dpo.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/dpo.py \\
        --config recipes/configs/tiny/dpo.yaml --backend native
    accelerate launch -m minimind_hf.recipes.dpo --config ...          # after pip install

The policy starts from ``model_name_or_path`` (an SFT folder); the reference is a frozen copy of the same
weights (trl loads it again from the folder, the native trainer deep-copies the policy). Records come from
`load_split("dpo", ...)` in trl's explicit-prompt conversational form (``prompt``, ``chosen``, ``rejected``
message lists + ``tools``), so both backends see the same pairs. The loss is the sigmoid DPO loss
``-log sigmoid(beta * margin)``, with conservative label smoothing when ``label_smoothing > 0``; the native
trainer implements exactly that (trl's other ``loss_type`` values are trl only).

============================  ================================================================
trl key (DPOConfig) / recipe  native key (minimind_hf.native.dpo.DPOConfig)
============================  ================================================================
per_device_train_batch_size   batch_size (pairs per micro-batch in both)
beta                          beta
label_smoothing               label_smoothing (with loss_type [sigmoid] only)
loss_type                     must be [sigmoid] for the native backend
max_length                    max_length (prompt + answer tokens)
max_prompt_length (recipe)    max_prompt_length (default max_length // 2; prompts cut from the left).
                              trl 1.16 has no such key: it keeps the start of prompt + answer up to
                              max_length and drops pairs whose prompt alone fills it
open_thinking (recipe)        open_thinking; for trl a ``chat_template_kwargs`` column
                              ``{open_thinking: true}`` (how trl 1.16's DPOTrainer takes template kwargs)
max_records (recipe)          max_pairs
============================  ================================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native

logger = logging.getLogger("minimind_hf.recipes")


@dataclass
class DPOArguments:
    """DPO recipe keys that trl 1.16's DPOConfig does not have."""

    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "native backend: prompts are cut from the left to this many tokens (default max_length // 2); "
            "trl 1.16 has no prompt truncation"
        },
    )
    open_thinking: bool = field(
        default=False,
        metadata={"help": "render prompts ending in '<think>\\n' (answers then start with their reasoning)"},
    )


def with_template_kwargs(records, open_thinking: bool):
    """trl 1.16's DPOTrainer reads chat-template kwargs from a per-record ``chat_template_kwargs`` column."""
    if records is None or not open_thinking:
        return records
    return records.map(lambda _: {"chat_template_kwargs": {"open_thinking": True}})


def native_problems(training_args) -> list[str]:
    """trl options that change the loss and that the native trainer does not implement."""
    t, p = training_args, []
    if list(t.loss_type) != ["sigmoid"]:
        p.append(
            f"loss_type {t.loss_type}: the native trainer implements sigmoid DPO (+ label_smoothing) only"
        )
    if t.loss_weights:
        p.append("loss_weights: the native trainer has a single loss")
    for name, default in (
        ("f_divergence_type", "reverse_kl"),
        ("use_weighting", False),
        ("ld_alpha", None),
        ("sync_ref_model", False),
        ("truncation_mode", "keep_start"),
    ):
        if getattr(t, name) != default:
            p.append(f"{name}={getattr(t, name)!r}: not supported by the native trainer (use backend: trl)")
    return p


def main(recipe_args, training_args, model_args, dpo_args: DPOArguments | None = None) -> None:
    dpo_args = dpo_args or DPOArguments()
    common.prepare_runtime(recipe_args)
    problems = []
    if (
        training_args.max_length is not None
        and dpo_args.max_prompt_length is not None
        and not (0 < dpo_args.max_prompt_length < training_args.max_length)
    ):
        problems.append(
            f"need 0 < max_prompt_length < max_length, got {dpo_args.max_prompt_length}, "
            f"{training_args.max_length}"
        )
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model="DPO starts from an SFT folder (policy and frozen reference start there)",
    )
    if recipe_args.backend == "native":
        max_length = training_args.max_length or 1024
        run_native(
            "dpo",
            recipe_args,
            training_args,
            model_args,
            {
                "beta": training_args.beta,
                "label_smoothing": training_args.label_smoothing,
                "max_length": max_length,
                "max_prompt_length": dpo_args.max_prompt_length or max_length // 2,
                "open_thinking": dpo_args.open_thinking,
                "max_pairs": recipe_args.max_records,
                "precompute_ref_logps": bool(training_args.precompute_ref_log_probs),
            },
            problems=native_problems(training_args),
            stage_mapped={
                "beta",
                "label_smoothing",
                "max_length",
                "loss_type",
                "truncation_mode",
                "precompute_ref_log_probs",
                "precompute_ref_batch_size",
                "disable_dropout",
                "pad_to_multiple_of",
                "padding_free",
            },
        )
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    from trl import DPOTrainer

    if dpo_args.max_prompt_length:
        logger.warning(
            "max_prompt_length=%d: trl 1.16's DPOTrainer has no prompt truncation (it keeps the start of "
            "prompt + answer up to max_length); native backend only",
            dpo_args.max_prompt_length,
        )
    tokenizer = common.load_tokenizer_for(recipe_args, model_args)
    train, evaluation = common.load_split("dpo", recipe_args, training_args.seed)
    model = common.build_or_load_model(recipe_args, model_args, tokenizer, training_args.trust_remote_code)
    trainer = common.native_weight_decay(DPOTrainer)(
        model=model,  # ref_model=None: trl loads a frozen reference from the same folder
        args=training_args,
        train_dataset=with_template_kwargs(train, dpo_args.open_thinking),
        eval_dataset=with_template_kwargs(evaluation, dpo_args.open_thinking),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    common.save_final(trainer, training_args.output_dir)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl DPOConfig, trl ModelConfig, DPOArguments) from ``--config FILE`` and ``--key value``."""
    from trl import DPOConfig

    return common.parse_recipe(DPOConfig, argv, extra_dataclasses=(DPOArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
