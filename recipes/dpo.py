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

The native translation is the ``DPO`` table in ``recipes/native_bridge.py`` (shown in recipes/README.md):
``loss_type`` must be ``[sigmoid]``; ``max_prompt_length`` (ours, native only: trl 1.16 has no prompt
truncation, it keeps the start of prompt + answer up to ``max_length``) defaults to ``max_length // 2``;
``precompute_ref_log_probs`` scores every pair with the reference once, as trl does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native, trl_refusals

logger = logging.getLogger("minimind_hf.recipes")


@dataclass
class DPOArguments:
    """DPO recipe keys that trl 1.16's DPOConfig does not have."""

    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "native backend: prompts are cut from the left to this many tokens "
            "(default max_length // 2); trl 1.16 has no prompt truncation"
        },
    )
    open_thinking: bool = field(
        default=False,
        metadata={"help": "render prompts ending in '<think>\\n' (answers then start with their reasoning)"},
    )


def with_template_kwargs(records, open_thinking: bool):
    """trl 1.16's DPOTrainer reads chat-template kwargs from a per-record ``chat_template_kwargs`` column
    (which the augmentation may have started: ``drop_empty_think``)."""
    if records is None or not open_thinking:
        return records
    return records.map(
        lambda r: {"chat_template_kwargs": {**(r.get("chat_template_kwargs") or {}), "open_thinking": True}}
    )


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
    if recipe_args.backend == "trl":
        problems += trl_refusals("dpo", dpo_args)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model="DPO starts from an SFT folder (policy and frozen reference start there)",
        stage="dpo",
        stage_args=(dpo_args,),
    )
    if recipe_args.backend == "native":
        run_native("dpo", recipe_args, training_args, model_args, dpo_args)
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    from trl import DPOTrainer

    tokenizer = common.load_tokenizer_for(recipe_args, model_args)
    train, evaluation = common.load_split("dpo", recipe_args, training_args.seed, tokenizer)
    model = common.build_or_load_model(
        recipe_args, model_args, tokenizer, training_args.trust_remote_code, training_args.model_init_kwargs
    )
    trainer = common.native_optimizer(DPOTrainer, recipe_args.optimizer)(
        # ref_model=None: trl loads a frozen reference from the same folder (or disables the adapter)
        model=model,
        args=training_args,
        train_dataset=with_template_kwargs(train, dpo_args.open_thinking),
        eval_dataset=with_template_kwargs(evaluation, dpo_args.open_thinking),
        processing_class=tokenizer,
        peft_config=common.peft_config(model_args),
    )
    common.train_and_save(trainer, "dpo", recipe_args, training_args, model_args)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl DPOConfig, trl ModelConfig, DPOArguments) from ``--config FILE`` and
    ``--key value``."""
    from trl import DPOConfig

    return common.parse_recipe(DPOConfig, argv, extra_dataclasses=(DPOArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
