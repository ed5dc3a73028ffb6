"""Supervised fine-tuning on chat conversations, with trl's ``SFTTrainer`` or our native trainer.

    accelerate launch recipes/sft.py --config recipes/configs/tiny/sft.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/sft.py \\
        --config recipes/configs/tiny/sft.yaml --backend native
    accelerate launch -m minimind_hf.recipes.sft --config ...          # after pip install

Loss on assistant tokens only (the template's ``{% generation %}`` blocks: reasoning, content, tool calls and
the closing ``<|im_end|>``), conversations packed whole into rows of ``max_length`` (best-fit decreasing,
``packing_strategy: bfd``) with positions restarting per conversation. Both backends read the same records
(`minimind_hf.data.load_records`), so the same YAML trains the same thing; ``tests/recipes`` checks that
their losses and gradients agree.
"""

from __future__ import annotations

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native


def sft_messages(records):
    """trl's conversational form: a ``messages`` column (our records call it ``conversations``)."""
    return records.rename_column("conversations", "messages")


# trl keys the native SFT translation consumes (so they are not reported as unused)
SFT_MAPPED = frozenset(
    {"max_length", "packing", "packing_strategy", "assistant_only_loss", "dataset_num_proc"}
)


def native_sft_keys(recipe_args, training_args) -> dict:
    """The native SFT stage's own keys (LoRA adds its adapter keys to these)."""
    return {
        "max_length": training_args.max_length,
        "packing": training_args.packing,
        "max_conversations": recipe_args.max_records,
        "num_proc": training_args.dataset_num_proc or 0,
    }


def sft_trainer(recipe_args, training_args, model_args, **trainer_kwargs):
    """(trl SFTTrainer with the native weight-decay grouping, tokenizer) on the recipe's data and model;
    ``trainer_kwargs`` go to SFTTrainer (LoRA passes ``peft_config``)."""
    from trl import SFTTrainer

    tokenizer = common.load_tokenizer_for(recipe_args, model_args)
    train, evaluation = common.load_split("sft", recipe_args, training_args.seed)
    model = common.build_or_load_model(recipe_args, model_args, tokenizer, training_args.trust_remote_code)
    trainer = common.native_weight_decay(SFTTrainer)(
        model=model,
        args=training_args,
        train_dataset=sft_messages(train),
        eval_dataset=sft_messages(evaluation) if evaluation is not None else None,
        processing_class=tokenizer,
        **trainer_kwargs,
    )
    return trainer, tokenizer


def main(recipe_args, training_args, model_args) -> None:
    common.prepare_runtime(recipe_args)
    problems = []
    if not training_args.assistant_only_loss:
        problems.append("assistant_only_loss: false trains on prompts too; MiniMind SFT recipes keep it true")
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model="SFT starts from a pretrained folder (e.g. the pretrain recipe's output_dir)",
    )
    if recipe_args.backend == "native":
        run_native(
            "sft",
            recipe_args,
            training_args,
            model_args,
            native_sft_keys(recipe_args, training_args),
            stage_mapped=SFT_MAPPED,
        )
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    trainer, _ = sft_trainer(recipe_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    common.save_final(trainer, training_args.output_dir)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl SFTConfig, trl ModelConfig) from ``--config FILE`` and ``--key value`` flags."""
    from trl import SFTConfig

    return common.parse_recipe(SFTConfig, argv)


if __name__ == "__main__":
    common.run_cli(main, parse_args)
