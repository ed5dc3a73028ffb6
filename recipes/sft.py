"""Supervised fine-tuning on chat conversations, with trl's ``SFTTrainer`` or our native trainer.

    accelerate launch recipes/sft.py --config recipes/configs/tiny/sft.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/sft.py \\
        --config recipes/configs/tiny/sft.yaml --backend native
    accelerate launch -m minimind_hf.recipes.sft --config ...          # after pip install

Loss on assistant tokens only (the template's ``{% generation %}`` blocks: reasoning, content, tool calls and
the closing ``<|im_end|>``), conversations packed whole into rows of ``max_length`` (best-fit decreasing,
``packing_strategy: bfd``) with positions restarting per conversation. Both backends read the same records
(`minimind_hf.data.load_records`), so the same YAML trains the same thing; ``tests/recipes`` checks that
their losses and gradients agree. ``use_peft: true`` (trl backend) trains LoRA adapters with trl's
``get_peft_config``; ``recipes/lora.py`` is the LoRA recipe for both backends
(and also writes a merged model).
"""

from __future__ import annotations

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native


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
        stage="sft",
    )
    if recipe_args.backend == "native":
        run_native("sft", recipe_args, training_args, model_args)
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    trainer, _ = common.sft_trainer(recipe_args, training_args, model_args)
    common.train_and_save(trainer, "sft", recipe_args, training_args, model_args)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl SFTConfig, trl ModelConfig) from ``--config FILE`` and ``--key value`` flags."""
    from trl import SFTConfig

    return common.parse_recipe(SFTConfig, argv)


if __name__ == "__main__":
    common.run_cli(main, parse_args)
