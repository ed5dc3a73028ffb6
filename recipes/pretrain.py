"""Pretraining (next-token prediction on text), with trl's ``SFTTrainer`` or our native trainer.

    accelerate launch recipes/pretrain.py --config recipes/configs/tiny/pretrain.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/pretrain.py \\
        --config recipes/configs/tiny/pretrain.yaml --backend native
    accelerate launch -m minimind_hf.recipes.pretrain --config ...      # after pip install

``{"text": ...}`` records, eos appended to every document (trl adds it to the ``text`` field), packed into
rows of ``max_length`` with positions restarting per document. ``backend: trl`` packs with
``packing_strategy: bfd_split`` (best-fit decreasing; documents longer than a row are split into row-sized
pieces, not dropped or truncated); the native backend concatenates all documents and cuts rows of exactly
``max_length`` tokens (no padding). Both train on every token of every document; the rows differ.

The model is ``model_name_or_path`` if set (continued pretraining), else a new MiniMind from ``preset`` +
``model_overrides``. The tokenizer is ``tokenizer``, else the model folder's, else a ByteLevel BPE of
``vocab_size`` tokens trained here on the training text (`minimind_hf.tokenizer.train_tokenizer`) and saved
with the model. With several processes only the main process trains it (``main_process_first``) and writes
it to ``output_dir``; the others then load that copy, so every rank is sure to hold the same tokenizer
(training is deterministic, but loading one copy is cheaper and cannot drift).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native

logger = logging.getLogger("minimind_hf.recipes")


@dataclass
class PretrainArguments:
    """Pretrain-only recipe keys."""

    vocab_size: int = field(
        default=6400,
        metadata={
            "help": "size of the tokenizer trained here when neither `tokenizer` nor "
            "`model_name_or_path` is set"
        },
    )


def pretrain_problems(recipe_args, training_args, model_args, pretrain_args) -> list[str]:
    p = []
    if training_args.dataset_text_field != "text":
        p.append(
            f"dataset_text_field must be text (pretrain records are {{'text': ...}}), "
            f"got {training_args.dataset_text_field!r}"
        )
    if training_args.assistant_only_loss or training_args.completion_only_loss:
        p.append("assistant_only_loss / completion_only_loss: pretraining learns every token; set them false")
    if not training_args.packing:
        p.append(
            "packing: false would truncate every document to max_length; pretraining packs (packing: true, "
            "packing_strategy: bfd_split)"
        )
    if not (recipe_args.tokenizer or model_args.model_name_or_path) and pretrain_args.vocab_size < 292:
        p.append(f"vocab_size must be >= 292 (36 reserved + 256 byte tokens), got {pretrain_args.vocab_size}")
    return p


def trained_tokenizer(texts, vocab_size: int, training_args):
    """Train the tokenizer on the main process, save it to output_dir; the other ranks load that copy."""
    from transformers import AutoTokenizer

    from minimind_hf.tokenizer import train_tokenizer

    with training_args.main_process_first(local=False, desc="training the tokenizer"):
        if common.is_main_process():
            logger.info("no tokenizer given: training a %d-token tokenizer on the training text", vocab_size)
            tokenizer = train_tokenizer(texts, vocab_size=vocab_size, show_progress=False)
            tokenizer.save_pretrained(training_args.output_dir)
        else:
            tokenizer = AutoTokenizer.from_pretrained(training_args.output_dir)
    return tokenizer


def main(recipe_args, training_args, model_args, pretrain_args=None) -> None:
    pretrain_args = pretrain_args or PretrainArguments()
    common.prepare_runtime(recipe_args)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=pretrain_problems(recipe_args, training_args, model_args, pretrain_args),
        stage="pretrain",
        stage_args=(pretrain_args,),
    )
    if recipe_args.backend == "native":
        run_native("pretrain", recipe_args, training_args, model_args, pretrain_args)
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    from trl import SFTTrainer

    train, evaluation = common.load_split("pretrain", recipe_args, training_args.seed)
    tokenizer = common.load_tokenizer_for(recipe_args, model_args)
    if tokenizer is None:
        tokenizer = trained_tokenizer(train["text"], pretrain_args.vocab_size, training_args)
    model = common.build_or_load_model(
        recipe_args, model_args, tokenizer, training_args.trust_remote_code, training_args.model_init_kwargs
    )
    trainer = common.native_optimizer(SFTTrainer, recipe_args.optimizer)(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=common.peft_config(model_args),
    )
    common.train_and_save(trainer, "pretrain", recipe_args, training_args, model_args)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl SFTConfig, trl ModelConfig, PretrainArguments) from ``--config FILE`` and
    ``--key value``."""
    from trl import SFTConfig

    return common.parse_recipe(SFTConfig, argv, extra_dataclasses=(PretrainArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
