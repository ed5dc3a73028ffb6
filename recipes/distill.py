"""Knowledge distillation from a teacher model, with trl's ``DistillationTrainer`` or our native trainer.

    accelerate launch recipes/distill.py --config recipes/configs/tiny/distill.yaml
    accelerate launch recipes/distill.py --config recipes/configs/tiny/distill.yaml --backend native
    accelerate launch -m minimind_hf.recipes.distill --config ...       # after pip install

The student is ``model_name_or_path``, the teacher ``teacher_model_name_or_path`` (required, any model with
the student's tokenizer/vocabulary; it may be wider or deeper). Both backends read the same SFT records and
share ``temperature``, but the two losses differ BY DESIGN:

``backend: native`` (`minimind_hf.native.distill`, the original MiniMind's objective): offline distillation
on the dataset's own assistant tokens (packed conversations, rows of ``max_length``)::

    loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)

``backend: trl`` (trl 1.16 ``DistillationTrainer``, on-policy distillation, Agarwal et al. 2024): the
dataset gives only PROMPTS (each conversation up to its last assistant turn); the student samples its own
completions (``max_completion_length`` tokens, sampled at ``temperature``), and the loss on those completion
tokens is the generalised Jensen-Shannon divergence between teacher and student at temperature T::

    loss = JSD_beta(p_teacher^T, p_student^T)        beta 0 = forward KL(teacher || student), 1 = reverse KL

so: no cross-entropy term (``alpha`` and ``max_length`` are native-only keys, refused by trl), no T^2 factor,
the tokens scored are the student's samples rather than the dataset's answers, and ``temperature`` is also the
sampling temperature. Set ``beta: 0.0`` for the same divergence direction as the native KD term (the
native backend only implements that one: another ``beta`` is an error there). Records' ``tools`` are not
passed to trl's prompts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native, trl_refusals

logger = logging.getLogger("minimind_hf.recipes")


@dataclass
class DistillArguments:
    """Distillation keys trl's DistillationConfig does not have (used by the native backend)."""

    alpha: float = field(
        default=0.5,
        metadata={
            "help": "native backend: weight of the hard-label CE; 1 - alpha on T^2 KL "
            "(trl's loss has no CE term)"
        },
    )
    max_length: int = field(
        default=340,
        metadata={
            "help": "native backend: tokens per conversation and per packed row "
            "(trl: prompts + max_completion_length)"
        },
    )


def distill_problems(recipe_args, training_args, model_args, distill_args) -> list[str]:
    p = []
    teacher = training_args.teacher_model_name_or_path
    if not teacher:
        p.append(
            "teacher_model_name_or_path is required: the teacher's folder (same tokenizer as the student)"
        )
    elif common._looks_local(teacher) and not Path(teacher).is_dir():
        p.append(f"teacher_model_name_or_path: no such folder {teacher!r}")
    if not 0.0 <= distill_args.alpha <= 1.0:
        p.append(f"alpha must be in [0, 1], got {distill_args.alpha}")
    if training_args.temperature <= 0:
        p.append(f"temperature must be > 0, got {training_args.temperature}")
    if recipe_args.backend == "trl":
        p += trl_refusals("distill", distill_args)
    return p


def prompts(records):
    """trl's prompt-only form: each conversation up to (without) its last assistant message."""

    def cut(record):
        messages = record["conversations"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
        return {"prompt": messages[:last]}

    return records.map(cut, remove_columns=records.column_names).filter(lambda r: len(r["prompt"]) > 0)


def load_teacher(training_args, model_args, student):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "float32"
    teacher = AutoModelForCausalLM.from_pretrained(
        training_args.teacher_model_name_or_path,
        dtype=getattr(torch, dtype),
        attn_implementation=model_args.attn_implementation or "sdpa",
        revision=training_args.teacher_model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    if teacher.config.vocab_size != student.config.vocab_size:
        raise common.RecipeError(
            [
                f"teacher vocab {teacher.config.vocab_size} != student vocab "
                f"{student.config.vocab_size}: distillation needs the same tokenizer"
            ]
        )
    return teacher


def main(recipe_args, training_args, model_args, distill_args=None) -> None:
    distill_args = distill_args or DistillArguments()
    common.prepare_runtime(recipe_args)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=distill_problems(recipe_args, training_args, model_args, distill_args),
        needs_model="the student to distil into (e.g. the SFT recipe's output_dir)",
        stage="distill",
        stage_args=(distill_args,),
    )
    if recipe_args.backend == "native":
        run_native("distill", recipe_args, training_args, model_args, distill_args)
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    from trl import DistillationTrainer

    tokenizer = common.load_tokenizer_for(recipe_args, model_args)
    train, evaluation = common.load_split("sft", recipe_args, training_args.seed)
    model = common.build_or_load_model(
        recipe_args, model_args, tokenizer, training_args.trust_remote_code, training_args.model_init_kwargs
    )
    trainer = common.native_optimizer(DistillationTrainer, recipe_args.optimizer)(
        model=model,
        teacher_model=load_teacher(training_args, model_args, model),
        args=training_args,
        train_dataset=prompts(train),
        eval_dataset=prompts(evaluation) if evaluation is not None else None,
        processing_class=tokenizer,
        peft_config=common.peft_config(model_args),
    )
    common.train_and_save(trainer, "distill", recipe_args, training_args, model_args)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl DistillationConfig, trl ModelConfig, DistillArguments) from ``--config FILE`` and
    ``--key value``."""
    from trl import DistillationConfig

    return common.parse_recipe(DistillationConfig, argv, extra_dataclasses=(DistillArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
