"""``backend: native``: run a recipe's YAML through our own trainers (`minimind_hf.native`).

The recipe YAML speaks trl's vocabulary (``per_device_train_batch_size``, ``gradient_accumulation_steps``,
``lr_scheduler_kwargs``...). `native_config` translates the shared training keys (table below) and a
stage's own keys (passed by each recipe) into the native stage's config, which validates everything again.
Options the native loop cannot honour are errors when they would change the result (a different scheduler
or optimizer) and warnings when they only change logistics (dataloader workers, logging dirs...).

==========================================  ===============================
trl / transformers key                      native key
==========================================  ===============================
output_dir                                  output_dir
model_name_or_path (ModelConfig)            model
attn_implementation (ModelConfig)           attn_implementation
learning_rate, weight_decay, adam_beta1/2   same names
adam_epsilon                                adam_eps
max_grad_norm, seed, gradient_checkpointing same names
per_device_train_batch_size                 batch_size
gradient_accumulation_steps                 grad_accum_steps
num_train_epochs (whole numbers)            num_epochs
max_steps (-1 = by epochs)                  max_steps (0 = by epochs)
warmup_steps (int, or a ratio < 1)          warmup_steps
lr_scheduler_kwargs.min_lr_rate             min_lr_ratio (cosine_with_min_lr; plain cosine = 0)
bf16 / fp16                                 mixed_precision
logging_steps                               log_every
save_strategy=steps + save_steps            save_every
save_total_limit                            keep_last
eval_strategy=steps + eval_steps            eval_every
report_to, run_name                         same names
resume_from_checkpoint (None / true / dir)  resume (never / auto / dir)
==========================================  ===============================
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from .common import RecipeArguments, RecipeError

logger = logging.getLogger("minimind_hf.recipes")

__all__ = ["native_config", "run_native"]

_SCHEDULERS = ("cosine_with_min_lr", "cosine")
_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_hf")
# trl/transformers keys that only change logistics, not what is computed: never worth a warning
_LOGISTICS = {
    "logging_dir",
    "logging_strategy",
    "logging_first_step",
    "logging_nan_inf_filter",
    "save_only_model",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "dataloader_drop_last",
    "remove_unused_columns",
    "disable_tqdm",
    "overwrite_output_dir",
    "push_to_hub",
    "hub_model_id",
    "hub_strategy",
    "hub_token",
    "hub_private_repo",
    "ddp_backend",
    "ddp_timeout",
    "ddp_find_unused_parameters",
    "use_cpu",
    "dataset_num_proc",
    "per_device_eval_batch_size",
    "do_train",
    "do_eval",
    "save_safetensors",
    "log_level",
    "log_level_replica",
    "log_on_each_node",
    "model_init_kwargs",
    "trust_remote_code",
    "include_num_input_tokens_seen",
    "average_tokens_across_devices",
    "project",
    "trackio_space_id",
    "save_strategy",
    "eval_strategy",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "optim",
    "bf16",
    "fp16",
    "tf32",
    "torch_compile",
    "dataset_kwargs",
    "dataset_text_field",
    "shuffle_dataset",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
    "eval_on_start",
    "prediction_loss_only",
    "debug",
    "pad_to_multiple_of",
}


def _min_lr_ratio(training_args: Any, problems: list[str]) -> float:
    sched = str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))
    if sched not in _SCHEDULERS:
        problems.append(
            f"lr_scheduler_type {sched!r}: the native backend implements warmup + cosine only "
            f"({' or '.join(_SCHEDULERS)}); use one of those or backend: trl"
        )
        return 0.1
    if sched == "cosine":
        return 0.0
    kwargs = training_args.lr_scheduler_kwargs or {}
    if "min_lr" in kwargs:
        return float(kwargs["min_lr"]) / training_args.learning_rate
    return float(kwargs.get("min_lr_rate", 0.0))


def _common_keys(
    recipe_args: RecipeArguments, training_args: Any, model_args: Any, problems: list[str]
) -> dict[str, Any]:
    t = training_args
    optim = str(getattr(t.optim, "value", t.optim))
    if optim not in _OPTIMIZERS:
        problems.append(
            f"optim {optim!r}: the native backend uses torch AdamW; set optim: adamw_torch or backend: trl"
        )
    epochs = t.num_train_epochs
    if t.max_steps <= 0 and not float(epochs).is_integer():
        problems.append(f"num_train_epochs {epochs}: the native backend runs whole epochs (or set max_steps)")
    # transformers: warmup_steps < 1 is a ratio of the total steps; the native loop wants a step count
    warmup = t.warmup_steps
    if 0 < warmup < 1:
        if t.max_steps <= 0:
            problems.append(
                "warmup_steps as a ratio needs max_steps with the native backend; give a step count"
            )
        warmup = math.ceil(warmup * max(t.max_steps, 0))
    precision = "bf16" if t.bf16 else "fp16" if t.fp16 else "auto"
    save_every = (
        int(t.save_steps) if str(getattr(t.save_strategy, "value", t.save_strategy)) == "steps" else 0
    )
    eval_strategy = str(getattr(t.eval_strategy, "value", t.eval_strategy))
    resume = t.resume_from_checkpoint
    resume = (
        "never"
        if resume in (None, "", False, "false", "False")
        else "auto"
        if resume in (True, "true", "True")
        else str(resume)
    )
    report = [r for r in (t.report_to or []) if r in ("tensorboard", "wandb", "swanlab")] or ["none"]
    return {
        "output_dir": t.output_dir,
        "model": model_args.model_name_or_path,
        "preset": recipe_args.preset,
        "model_overrides": recipe_args.overrides(),
        "tokenizer": recipe_args.tokenizer,
        "attn_implementation": model_args.attn_implementation or "sdpa",
        "gradient_checkpointing": bool(t.gradient_checkpointing),
        "learning_rate": t.learning_rate,
        "min_lr_ratio": _min_lr_ratio(t, problems),
        "warmup_steps": int(warmup),
        "weight_decay": t.weight_decay,
        "adam_beta1": t.adam_beta1,
        "adam_beta2": t.adam_beta2,
        "adam_eps": t.adam_epsilon,
        "max_grad_norm": t.max_grad_norm,
        "batch_size": t.per_device_train_batch_size,
        "grad_accum_steps": t.gradient_accumulation_steps,
        "num_epochs": max(1, int(epochs)),
        "max_steps": max(0, t.max_steps),
        "mixed_precision": precision,
        "seed": t.seed,
        "num_threads": recipe_args.num_threads,
        "eval_every": int(t.eval_steps or 0) if eval_strategy == "steps" else 0,
        "log_every": max(1, int(t.logging_steps)),
        "save_every": save_every,
        "keep_last": t.save_total_limit or 2,
        "resume": resume,
        "report_to": report,
        "run_name": t.run_name,
        "eval_data": list(recipe_args.eval_data),
        "eval_ratio": recipe_args.eval_ratio,
        "data": list(recipe_args.data),
        "skip_invalid": recipe_args.skip_invalid,
    }


def _warn_unmapped(training_args: Any, mapped: set[str]) -> None:
    """Log the trl keys set away from their defaults that the native backend does not use."""
    for f in dataclasses.fields(training_args):
        if f.name in mapped or f.name in _LOGISTICS or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        value = getattr(training_args, f.name)
        value = getattr(value, "value", value)  # enums compare by their string value
        if value in (None, [], "") and default in (None, [], ""):
            continue
        if default is not None and value != default:
            logger.warning(
                "backend native: %s=%r is a trl option the native trainer does not use", f.name, value
            )


_TRAINING_KEYS = {
    "output_dir",
    "gradient_checkpointing",
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "seed",
    "eval_steps",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "resume_from_checkpoint",
    "report_to",
    "run_name",
}


def native_config(
    stage: str,
    recipe_args: RecipeArguments,
    training_args: Any,
    model_args: Any,
    stage_keys: dict[str, Any],
    stage_mapped: set[str] = frozenset(),
    problems: list[str] | None = None,
):
    """The native stage config (validated) for this recipe; raise `RecipeError` listing every problem.

    ``stage_keys``: the stage's own native keys (e.g. ``{"max_length": training_args.max_length}``) and
    ``stage_mapped``: the trl keys they came from (so they are not reported as unused)."""
    from minimind_hf.native.config import ConfigError, load_config
    from minimind_hf.native.stages import get_stage

    problems = list(problems or [])
    values = _common_keys(recipe_args, training_args, model_args, problems)
    values.update(stage_keys)
    cls = get_stage(stage).config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in values.items() if k in names}
    try:
        cfg = load_config(cls, None, values)
    except ConfigError as e:
        problems += e.problems
        cfg = None
    if problems:
        raise RecipeError(problems, f"recipe (backend native, stage {stage})")
    _warn_unmapped(training_args, _TRAINING_KEYS | set(stage_mapped))
    return cfg


def run_native(
    stage: str,
    recipe_args: RecipeArguments,
    training_args: Any,
    model_args: Any,
    stage_keys: dict[str, Any],
    stage_mapped: set[str] = frozenset(),
    problems: list[str] | None = None,
):
    """Translate, validate and run a native stage; returns its `TrainResult`."""
    from minimind_hf.native.stages import get_stage

    cfg = native_config(stage, recipe_args, training_args, model_args, stage_keys, stage_mapped, problems)
    if recipe_args.dry_run:
        import json

        from minimind_hf.native.config import config_to_dict

        print(json.dumps({"backend": "native", "stage": stage, "config": config_to_dict(cfg)}, indent=2))
        return None
    logger.info("backend native: running minimind_hf.native %s", stage)
    return get_stage(stage).run(cfg)
