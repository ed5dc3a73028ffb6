"""``backend: native``: the one translation from a recipe's YAML (trl's vocabulary) to our native trainers.

A recipe YAML holds the fields of several dataclasses at once: ours (`RecipeArguments` and a stage's extra
arguments), the stage's trl config (``SFTConfig``, ``DPOConfig``, ...) and trl's ``ModelConfig``. For each
stage, `TABLES` is one declarative table of `Key` rows: *this native config field is computed from these
recipe fields*. Everything else follows from the table:

- the **honoured** fields of a stage are the fields its rows read (`honoured`);
- every other field of those dataclasses is **refused**: if it differs from its default, `native_config`
  fails naming the field and what to do instead (`refusals`). Nothing is dropped silently, and a new trl
  field is refused until a row reads it (``tests/recipes/test_vocabulary.py`` enumerates them all).

A row with ``native=None`` is honoured by the recipe script itself (``backend``, ``dry_run``), or is read to
be checked (``optim`` must be AdamW). The same machinery refuses, under ``backend: trl``, the native-only
keys of our own dataclasses (`TRL_UNUSED`). ``recipes/README.md`` shows the tables (`markdown_table`
renders them; a test keeps the README in step).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .common import RecipeArguments, RecipeError

logger = logging.getLogger("minimind_hf.recipes")

__all__ = [
    "TABLES",
    "TRL_UNUSED",
    "Key",
    "RecipeInputs",
    "honoured",
    "markdown_table",
    "readme_tables",
    "native_config",
    "refusals",
    "run_native",
    "translation_problems",
    "trl_refusals",
]


class RecipeInputs:
    """The parsed dataclasses of one recipe run, read as one namespace: ``inputs.learning_rate``."""

    def __init__(self, *parts: Any):
        self.parts = [p for p in parts if p is not None]
        # the keys the user set (`common.given_keys`), when parsed from a YAML and flags
        self.given = next((p.given for p in self.parts if getattr(p, "given", None) is not None), None)

    def owner(self, name: str) -> Any:
        for part in self.parts:
            if name in _init_fields(part):
                return part
        raise AttributeError(name)

    def __getattr__(self, name: str) -> Any:
        if name in ("parts", "given"):
            raise AttributeError(name)
        return getattr(self.owner(name), name)

    def has(self, name: str) -> bool:
        return any(name in _init_fields(p) for p in self.parts)


Convert = Callable[[RecipeInputs, list], Any]


@dataclass(frozen=True)
class Key:
    """One table row: native field ``native`` = ``convert(inputs, problems)``, computed from the fields
    ``reads``.

    ``convert`` defaults to the value of ``reads[0]``; it appends to ``problems`` for values the native
    trainer cannot honour. ``native=None``: honoured by the recipe itself, or read only to be checked."""

    native: str | None
    reads: tuple[str, ...]
    convert: Convert | None = None
    note: str = ""

    def value(self, inputs: RecipeInputs, problems: list[str]) -> Any:
        if self.convert is not None:
            return self.convert(inputs, problems)
        return getattr(inputs, self.reads[0])


def key(native: str | None, *reads: str, convert: Convert | None = None, note: str = "") -> Key:
    return Key(native, tuple(reads) or (native,), convert, note)


# ------------------------------------------------------------------------------ conversions (common)
def _enum(value: Any) -> str:
    return str(getattr(value, "value", value))


def _ratio_steps(value: float | int | None, name: str, a: RecipeInputs, problems: list[str]) -> int:
    """transformers' convention: a step count, or a float in (0, 1) = that fraction of the total steps."""
    if value is None:
        return 0
    if 0 < value < 1:
        if a.max_steps <= 0:
            problems.append(
                f"{name} {value} is a ratio of the total steps: the native backend needs max_steps for it"
            )
            return 0
        return math.ceil(value * a.max_steps)
    return int(value)


_SCHEDULERS = ("cosine_with_min_lr", "cosine")
_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_hf")
_TRACKERS = ("tensorboard", "wandb", "swanlab")


def _min_lr_ratio(a: RecipeInputs, problems: list[str]) -> float:
    sched = _enum(a.lr_scheduler_type)
    if sched not in _SCHEDULERS:
        problems.append(
            f"lr_scheduler_type {sched!r}: the native backend implements warmup + cosine only "
            f"({' or '.join(_SCHEDULERS)}); use one of those or backend: trl"
        )
        return 0.0
    kwargs = dict(a.lr_scheduler_kwargs or {})
    if sched == "cosine":
        if kwargs:
            problems.append(f"lr_scheduler_kwargs {kwargs}: not used by the native plain cosine schedule")
        return 0.0
    unknown = set(kwargs) - {"min_lr", "min_lr_rate"}
    if unknown:
        problems.append(
            f"lr_scheduler_kwargs {sorted(unknown)}: the native cosine_with_min_lr takes "
            "min_lr_rate or min_lr"
        )
    if "min_lr" in kwargs:
        return float(kwargs["min_lr"]) / a.learning_rate
    return float(kwargs.get("min_lr_rate", 0.0))


def _optim(a: RecipeInputs, problems: list[str]) -> None:
    if _enum(a.optim) not in _OPTIMIZERS:
        problems.append(
            f"optim {_enum(a.optim)!r}: the native backend uses torch AdamW; "
            "set optim: adamw_torch or backend: trl"
        )


def _max_steps(a: RecipeInputs, problems: list[str]) -> int:
    if a.max_steps < -1 or a.max_steps == 0:  # transformers' -1 means "by epochs"; anything else is a slip
        problems.append(
            f"max_steps must be a positive step count, or -1 to train num_train_epochs, got {a.max_steps}"
        )
    return max(0, a.max_steps)


def _epochs(a: RecipeInputs, problems: list[str]) -> int:
    if a.max_steps <= 0 and not float(a.num_train_epochs).is_integer():
        problems.append(
            f"num_train_epochs {a.num_train_epochs}: the native backend runs whole epochs (or set max_steps)"
        )
    return max(1, int(a.num_train_epochs))


def _precision(a: RecipeInputs, problems: list[str]) -> str:
    # the same meaning as trl's: bf16 / fp16 mixed precision when asked for, fp32 when switched off; neither
    # written in the YAML: the native auto (bf16 where the GPU or CPU computes it natively, `acceleration`)
    if a.given is not None and not {"bf16", "fp16"} & set(a.given):
        return "auto"
    return "bf16" if a.bf16 else "fp16" if a.fp16 else "no"


def _compile(a: RecipeInputs, problems: list[str]) -> bool | str:
    # torch_compile left unset leaves the native choice to `acceleration.resolve_compile` (auto)
    if a.torch_compile:
        return True
    return "auto" if a.given is None or "torch_compile" not in a.given else False


def _interval(strategy: str, steps_field: str, what: str) -> Convert:
    """``*_strategy`` + ``*_steps`` -> every-N-steps (0 = never); ``epoch`` / ``best`` are refused."""

    def convert(a: RecipeInputs, problems: list[str]) -> int:
        value = _enum(getattr(a, strategy))
        if value == "no":
            return 0
        if value != "steps":
            problems.append(
                f"{strategy} {value!r}: the native backend {what} every N steps only ({strategy}: steps)"
            )
            return 0
        return _ratio_steps(getattr(a, steps_field), steps_field, a, problems)

    return convert


def _log_every(a: RecipeInputs, problems: list[str]) -> int:
    if _enum(a.logging_strategy) != "steps":
        problems.append(
            f"logging_strategy {_enum(a.logging_strategy)!r}: the native backend logs every logging_steps"
        )
    return max(1, _ratio_steps(a.logging_steps, "logging_steps", a, problems))


def _keep_last(a: RecipeInputs, problems: list[str]) -> int:
    return int(a.save_total_limit or 0)  # None = keep every checkpoint, as transformers does


def _resume(a: RecipeInputs, problems: list[str]) -> str:
    """Unset means native ``auto``, not trl's "start over": a re-run continues a matching unfinished run, and
    another run's (or a finished run's) checkpoints are an error, never silently replaced.
    ``false`` starts over."""
    value = a.resume_from_checkpoint
    if value in (None, "", True) or str(value).lower() == "true":
        return "auto"
    return "never" if value is False or str(value).lower() == "false" else str(value)


def _report_to(a: RecipeInputs, problems: list[str]) -> list[str]:
    names = [a.report_to] if isinstance(a.report_to, str) else list(a.report_to or [])
    names = [n for n in names if n != "none"]
    if "all" in names:
        names = [n for n in names if n != "all"] + list(_TRACKERS)
    unknown = [n for n in names if n not in _TRACKERS]
    if unknown:
        problems.append(f"report_to {unknown}: the native backend logs to {', '.join(_TRACKERS)} (or none)")
    return [n for n in names if n in _TRACKERS] or ["none"]


def _overrides(a: RecipeInputs, problems: list[str]) -> dict:
    try:
        return a.owner("model_overrides").overrides()
    except ValueError as e:  # reported by check_recipe too
        problems.append(f"model_overrides: {e}")
        return {}


def _must_be(name: str, allowed: Sequence[Any], why: str) -> Convert:
    def convert(a: RecipeInputs, problems: list[str]) -> None:
        value = getattr(a, name)
        value = (
            [getattr(v, "value", v) for v in value]
            if isinstance(value, list)
            else getattr(value, "value", value)
        )
        if value not in allowed:
            problems.append(f"{name} {value!r}: {why}")

    return convert


COMMON = (
    key(None, "backend", "dry_run", note="honoured by the recipe script"),
    key("output_dir"),
    key("model", "model_name_or_path"),
    key("preset"),
    key("model_overrides", convert=_overrides),
    key("tokenizer"),
    key("attn_implementation", convert=lambda a, p: a.attn_implementation or "sdpa", note="default sdpa"),
    key(
        None,
        "dtype",
        convert=_must_be(
            "dtype",
            ("float32",),
            "the native trainer keeps fp32 master weights; use bf16/fp16 for mixed precision",
        ),
        note="must be float32 (mixed precision: bf16 / fp16)",
    ),
    key(
        "gradient_checkpointing",
        "activation_checkpointing",
        "gradient_checkpointing",
        convert=lambda a, p: bool(a.activation_checkpointing),
        note="gradient_checkpointing is transformers' deprecated alias",
    ),
    key("learning_rate"),
    key(
        "min_lr_ratio",
        "lr_scheduler_type",
        "lr_scheduler_kwargs",
        convert=_min_lr_ratio,
        note="cosine_with_min_lr (min_lr_rate or min_lr) or cosine (0)",
    ),
    key(None, "optim", convert=lambda a, p: _optim(a, p), note="adamw_torch / adamw_torch_fused / adamw_hf"),
    key("optimizer", note="ours: adamw, or muon (both backends)"),
    key(
        "warmup_steps",
        convert=lambda a, p: _ratio_steps(a.warmup_steps, "warmup_steps", a, p),
        note="a step count, or a ratio (< 1) of max_steps",
    ),
    key("weight_decay"),
    key("adam_beta1"),
    key("adam_beta2"),
    key("adam_eps", "adam_epsilon"),
    key("max_grad_norm"),
    key("batch_size", "per_device_train_batch_size"),
    key("grad_accum_steps", "gradient_accumulation_steps"),
    key("num_epochs", "num_train_epochs", convert=_epochs, note="whole epochs"),
    key("max_steps", convert=lambda a, p: _max_steps(a, p), note="-1 = by epochs (native 0)"),
    key(
        "mixed_precision",
        "bf16",
        "fp16",
        convert=_precision,
        note="bf16 / fp16 / fp32 (no); neither set: auto",
    ),
    key("compile", "torch_compile", convert=_compile, note="unset: auto (long runs on packed rows)"),
    key("seed"),
    key("num_threads"),
    key(
        "eval_every",
        "eval_strategy",
        "eval_steps",
        convert=_interval("eval_strategy", "eval_steps", "evaluates"),
        note="steps or no",
    ),
    key(
        "eval_at_end",
        "eval_strategy",
        convert=lambda a, p: _enum(a.eval_strategy) != "no",
        note="no: no evaluation at all, as in trl",
    ),
    key("log_every", "logging_strategy", "logging_steps", convert=_log_every, note="steps"),
    key(
        "save_every",
        "save_strategy",
        "save_steps",
        convert=_interval("save_strategy", "save_steps", "saves"),
        note="steps or no",
    ),
    key("keep_last", "save_total_limit", convert=_keep_last, note="unset = keep all"),
    key(
        "resume",
        "resume_from_checkpoint",
        convert=_resume,
        note="unset / true: auto (a matching unfinished run only); false: start over; or a folder",
    ),
    key("report_to", convert=_report_to, note="tensorboard, wandb, swanlab, none"),
    key("run_name"),
    key("progress", "disable_tqdm", convert=lambda a, p: not a.disable_tqdm),
    key("use_cpu"),
    key(
        None,
        "average_tokens_across_devices",
        convert=_must_be(
            "average_tokens_across_devices",
            (True,),
            "the native loop always normalises by the tokens of all processes",
        ),
        note="must be true (always the case natively)",
    ),
    key("data"),
    key("eval_data"),
    key("eval_ratio"),
    key("skip_invalid"),
)


# ------------------------------------------------------------------------------ stage tables
def _num_proc(a: RecipeInputs, problems: list[str]) -> int:
    if a.dataset_num_proc is not None and a.dataset_num_proc < 1:
        problems.append(f"dataset_num_proc must be >= 1 (or unset: automatic), got {a.dataset_num_proc}")
    return int(a.dataset_num_proc or 0)


# evaluation in batches of rows (the loop's token-weighted loss, DPO's pairs);
# GRPO / PPO evaluate by generating
_EVAL_BATCH = key("eval_batch_size", "per_device_eval_batch_size")

_SFT_DATA = (
    _EVAL_BATCH,
    key("max_length"),
    key("packing"),
    key(
        None,
        "packing_strategy",
        convert=_must_be(
            "packing_strategy", ("bfd",), "the native SFT packs whole conversations best-fit decreasing (bfd)"
        ),
        note="must be bfd",
    ),
    key(None, "assistant_only_loss", note="must be true (checked by the recipe)"),
    key("max_conversations", "max_records"),
    key("add_system_ratio"),
    key("empty_think_ratio"),
    key("num_proc", "dataset_num_proc", convert=_num_proc),
)

PRETRAIN = (
    _EVAL_BATCH,
    key("seq_len", "max_length"),
    key(
        None,
        "packing",
        "packing_strategy",
        "dataset_text_field",
        "assistant_only_loss",
        "completion_only_loss",
        note="checked by the recipe (packed text); native rows are the concatenated documents cut "
        "every max_length",
    ),
    key("max_documents", "max_records"),
    key("vocab_size"),
    key("num_proc", "dataset_num_proc", convert=_num_proc),
)


def _lora_targets(a: RecipeInputs, problems: list[str]) -> list[str]:
    targets = a.lora_target_modules
    return [] if targets is None else [targets] if isinstance(targets, str) else list(targets)


LORA = _SFT_DATA + (
    key(None, "use_peft", "merge", note="use_peft must be true; merge: the recipe writes output_dir/merged"),
    key("lora_rank", "lora_r"),
    key("lora_alpha", convert=lambda a, p: float(a.lora_alpha)),
    key("lora_dropout"),
    key("lora_target_modules", convert=_lora_targets, note="names of MiniMind's linear layers"),
)

DPO = (
    _EVAL_BATCH,
    key("beta"),
    key("label_smoothing"),
    key(
        None,
        "loss_type",
        convert=_must_be(
            "loss_type",
            (["sigmoid"],),
            "the native trainer implements sigmoid DPO (+ label_smoothing) only; use backend: trl",
        ),
        note="must be [sigmoid]",
    ),
    key("max_length", convert=lambda a, p: a.max_length or 1024),
    key(
        "max_prompt_length",
        "max_prompt_length",
        "max_length",
        convert=lambda a, p: a.max_prompt_length or (a.max_length or 1024) // 2,
        note="default max_length // 2",
    ),
    key("open_thinking"),
    key("empty_think_ratio"),
    key("max_pairs", "max_records"),
    key("precompute_ref_logps", "precompute_ref_log_probs"),
    key("disable_dropout"),
)


def _grpo_batch(a: RecipeInputs, problems: list[str]) -> tuple[int, int]:
    """trl's completions per micro-step -> native prompts per micro-batch (see recipes/grpo.py)."""
    G = a.num_generations
    if a.per_device_train_batch_size % G == 0:
        return a.per_device_train_batch_size // G, a.gradient_accumulation_steps
    step = a.per_device_train_batch_size * a.gradient_accumulation_steps
    if step % G == 0:
        return step // G, 1  # the whole step in one micro-batch: same step, more memory
    problems.append(
        f"per_device_train_batch_size {a.per_device_train_batch_size} (x gradient_accumulation_steps "
        f"{a.gradient_accumulation_steps}) is not a multiple of num_generations {G}: the native trainer "
        "samples whole groups per process"
    )
    return 1, 1


def _one_generation_per_step(a: RecipeInputs, problems: list[str]) -> None:
    if a.steps_per_generation != a.gradient_accumulation_steps:
        problems.append(
            f"steps_per_generation {a.steps_per_generation} (or generation_batch_size "
            f"{a.generation_batch_size}): the native trainer samples one rollout per optimiser step; "
            "leave both unset"
        )


def _open_thinking(a: RecipeInputs, problems: list[str]) -> bool:
    kwargs = a.chat_template_kwargs or {} if a.has("chat_template_kwargs") else {}
    if isinstance(kwargs, dict) and set(kwargs) - {"open_thinking"}:
        problems.append(
            f"chat_template_kwargs {sorted(set(kwargs) - {'open_thinking'})}: the native trainer only "
            "knows open_thinking"
        )
    return bool(a.open_thinking or (isinstance(kwargs, dict) and kwargs.get("open_thinking")))


def _reward_options(a: RecipeInputs, problems: list[str]) -> dict:
    from .rl_shared import reward_options_dict

    try:
        return reward_options_dict(a.owner("reward_options"))
    except Exception:  # noqa: BLE001 - reported with its reason by reward_problems
        return {}


_RL_COMMON = (
    key("rewards", convert=lambda a, p: list(a.rewards)),
    key("reward_options", convert=_reward_options),
    key("open_thinking", "open_thinking", "chat_template_kwargs", convert=_open_thinking),
    key("thinking_ratio"),
    key("max_prompt_length", convert=lambda a, p: a.max_prompt_length or 512, note="default 512"),
    key("max_prompts", "max_records"),
    key("max_new_tokens", "max_completion_length"),
    key("temperature"),
    key("top_p"),
)


def _max_turns(a: RecipeInputs, problems: list[str]) -> int:
    """trl's ``max_tool_calling_iterations`` (tool rounds after the first turn) -> native turns."""
    iterations = a.max_tool_calling_iterations
    if not a.tools:
        if iterations:
            problems.append(
                "max_tool_calling_iterations is set but tools is empty: name the tools (e.g. [calculator])"
            )
        return 1
    if iterations is None:
        problems.append(
            "tools: set max_tool_calling_iterations (e.g. 2 = up to 3 turns); "
            "the native rollout needs a bound"
        )
        return 1
    return int(iterations) + 1


_TOOL_ROWS = (
    key("tools", convert=lambda a, p: list(a.tools)),
    key("max_turns", "max_tool_calling_iterations", "tools", convert=_max_turns, note="iterations + 1"),
    key("max_tool_response_tokens"),
)

GRPO = (
    _RL_COMMON
    + _TOOL_ROWS
    + (
        key(
            "batch_size",
            "per_device_train_batch_size",
            "num_generations",
            "gradient_accumulation_steps",
            convert=lambda a, p: _grpo_batch(a, p)[0],
            note="per_device_train_batch_size / num_generations prompts",
        ),
        key(
            "grad_accum_steps",
            "per_device_train_batch_size",
            "num_generations",
            "gradient_accumulation_steps",
            convert=lambda a, p: _grpo_batch(a, [])[1],
        ),
        key(
            None,
            "steps_per_generation",
            "generation_batch_size",
            convert=_one_generation_per_step,
            note="one generation per optimiser step (the default)",
        ),
        key("num_generations"),
        key("reward_weights", convert=lambda a, p: list(a.reward_weights or [])),
        key("beta"),
        key("epsilon_low", "epsilon"),
        key(
            "epsilon_high",
            "epsilon_high",
            "epsilon",
            convert=lambda a, p: a.epsilon if a.epsilon_high is None else a.epsilon_high,
        ),
        key("loss_type", convert=lambda a, p: _enum(a.loss_type)),
        key("scale_rewards", convert=lambda a, p: _enum(a.scale_rewards)),
        key(
            "kl_ratio_correction",
            "use_bias_correction_kl",
            convert=lambda a, p: bool(a.use_bias_correction_kl),
        ),
        key("num_iterations"),
        key(
            None,
            "multi_objective_aggregation",
            convert=_must_be(
                "multi_objective_aggregation",
                ("sum_then_normalize",),
                "the native trainer sums the weighted rewards, then normalises",
            ),
        ),
        key(
            None,
            "importance_sampling_level",
            convert=_must_be(
                "importance_sampling_level", ("token",), "the native trainer uses token-level ratios"
            ),
        ),
        key(
            None,
            "shuffle_dataset",
            convert=_must_be("shuffle_dataset", (True,), "the native loop always shuffles"),
        ),
        key("disable_dropout"),
    )
)

SPO = _RL_COMMON + (
    key("reward_weights", convert=lambda a, p: list(a.reward_weights or [])),
    key("beta"),
    key("reward_low"),
    key("reward_high"),
    key("d_half"),
    key("rho_min"),
    key("rho_max"),
    key("priority_eps"),
)

PPO = _RL_COMMON + (
    key("critic_learning_rate"),
    key("ppo_epochs", "num_ppo_epochs"),
    key("mini_batch_size"),
    key("early_stop_kl"),
    key("gamma"),
    key("lam"),
    key("clip_range", "cliprange"),
    key("clip_range_value", "cliprange_value"),
    key("vf_coef"),
    key("kl_coef"),
    key("kl_mode"),
    key("whiten_advantages"),
)

DISTILL = (
    _EVAL_BATCH,
    key("teacher", "teacher_model_name_or_path"),
    key("alpha"),
    key("temperature"),
    key("max_length"),
    key(
        None,
        "beta",
        convert=_must_be(
            "beta",
            (0.0,),
            "the native divergence is forward KL(teacher || student) "
            "(beta: 0.0); use backend trl for reverse KL / JSD",
        ),
        note="must be 0.0 (forward KL)",
    ),
    key("max_conversations", "max_records"),
    key("add_system_ratio"),
    key("empty_think_ratio"),
    key("disable_dropout"),
)

# recipe stage -> (native stage, its rows). The common rows come first; a stage row for the same native
# field replaces the common one (GRPO's batch_size).
TABLES: dict[str, tuple[str, tuple[Key, ...]]] = {
    "pretrain": ("pretrain", PRETRAIN),
    "sft": ("sft", _SFT_DATA),
    "lora": ("lora", LORA),
    "dpo": ("dpo", DPO),
    "grpo": ("grpo", GRPO),
    "agent": ("agent", GRPO),
    "spo": ("spo", SPO),
    "ppo": ("ppo", PPO),
    "distill": ("distill", DISTILL),
}

# Our own keys that the trl backend does not use: refused there when set (trl stages only).
TRL_UNUSED: dict[str, frozenset[str]] = {
    "dpo": frozenset({"max_prompt_length"}),
    "grpo": frozenset({"max_prompt_length", "tools", "max_tool_response_tokens"}),
    "rloo": frozenset({"max_prompt_length", "tools", "max_tool_response_tokens"}),
    "agent": frozenset({"max_prompt_length", "max_tool_response_tokens", "thinking_ratio"}),
    "distill": frozenset({"alpha", "max_length"}),
}
_TRL_UNUSED_WHY = {
    "max_prompt_length": "trl 1.16 does not truncate prompts; native backend only",
    "alpha": "trl's on-policy distillation loss has no CE term; native backend only",
    "max_length": "trl's distillation uses prompts + max_completion_length; native backend only",
    "tools": "under backend trl, tool-calling rollouts are the agent recipe (recipes/agent.py: trl's "
    "GRPOTrainer(tools=))",
    "max_tool_response_tokens": "native backend only (trl drops a tool result that overflows "
    "max_completion_length instead of shortening it)",
    "thinking_ratio": "trl renders every agent prompt with one chat_template_kwargs (its tool calling needs "
    "conversational prompts); use open_thinking, or backend: native",
}


def rows(stage: str) -> tuple[Key, ...]:
    """The stage's full table: common rows, then the stage's own (which win for the same native field)."""
    own = TABLES[stage][1]
    replaced = {r.native for r in own if r.native is not None}
    return tuple(r for r in COMMON if r.native not in replaced) + own


def honoured(stage: str) -> frozenset[str]:
    """Every recipe field the native backend reads for `stage`."""
    return frozenset(name for row in rows(stage) for name in row.reads)


# ------------------------------------------------------------------------------ refusals
_HINTS = {
    "use_peft": "native LoRA is the lora recipe (recipes/lora.py, minimind-hf train lora); "
    "or use backend: trl",
    "push_to_hub": "upload the output folder afterwards (hf upload REPO output_dir); or use backend: trl",
    "fsdp": "the native trainer runs DDP; use backend: trl for FSDP",
    "deepspeed": "the native trainer runs DDP; use backend: trl for DeepSpeed",
    "load_best_model_at_end": "the native trainer keeps the final weights; "
    "pick a checkpoint from output_dir/checkpoints",
    "trust_remote_code": "the native trainer always uses minimind_hf's own MiniMind classes (no remote code)",
    "tools": "tool-calling rollouts run in the grpo and agent stages",
    "max_tool_response_tokens": "tool-calling rollouts run in the grpo and agent stages",
    "per_device_eval_batch_size": "native GRPO / PPO evaluate one greedy completion per eval prompt, in "
    "generation chunks; use backend: trl",
}


def _init_fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj) if f.init}


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(_enum(a) == _enum(b)) if not isinstance(a, (list, dict)) else a == b
    except Exception:  # noqa: BLE001 - values without a usable ==
        return a is b


def _reference(obj: Any, keep: Iterable[str]) -> Any:
    """``type(obj)`` built with only the `keep` fields copied (so post-init derivations match), else
    defaults."""
    fields = _init_fields(obj)
    kwargs = {n: getattr(obj, n) for n in keep if n in fields}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return type(obj)(**kwargs)
        except Exception:  # noqa: BLE001 - fall back to the declared defaults
            return None


def _declared_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def changed_fields(obj: Any, keep: Iterable[str], given: Iterable[str] | None = None) -> dict[str, Any]:
    """Init fields of the dataclass `obj` outside `keep` that were set away from their default.

    With `given` (the keys the user wrote: `common.given_keys`) only those count, and a value equal to the
    declared default is no request. Without it (a program built the dataclasses), every field is compared with
    a copy of `obj` built from its `keep` fields alone, so values a ``__post_init__`` derives compare
    equal."""
    fields = {n: f for n, f in _init_fields(obj).items() if n not in set(keep)}
    if given is not None:
        given = set(given)
        fields = {n: f for n, f in fields.items() if n in given}
    ref = _reference(obj, keep) if fields else None
    out = {}
    for name, f in fields.items():
        value = getattr(obj, name)
        defaults = [_declared_default(f)] + ([getattr(ref, name)] if ref is not None else [])
        if not any(d is not dataclasses.MISSING and _same(value, d) for d in defaults):
            out[name] = value
    return out


def _show(value: Any) -> str:
    text = repr(getattr(value, "value", value))
    return text if len(text) <= 60 else text[:57] + "..."


def refusals(
    inputs: RecipeInputs, keep: Iterable[str], backend: str, hints: dict[str, str] | None = None
) -> list[str]:
    """One problem per field set away from its default that `backend` does not honour (`keep`)."""
    hints = {**_HINTS, **(hints or {})}
    other = "trl" if backend == "native" else "native"
    problems = []
    for part in inputs.parts:
        for name, value in changed_fields(part, keep, inputs.given).items():
            why = hints.get(name, f"backend {other} honours it" if backend == "native" else "")
            problems.append(
                f"{name}={_show(value)}: not supported by backend {backend}" + (f" ({why})" if why else "")
            )
    return problems


def trl_refusals(stage: str, *ours: Any) -> list[str]:
    """Under ``backend: trl``: the fields of our own dataclasses `ours` that trl does not use (`TRL_UNUSED`)
    and that are set."""
    unused = TRL_UNUSED.get(stage, frozenset())
    inputs = RecipeInputs(*ours)
    keep = {n for p in inputs.parts for n in _init_fields(p)} - unused
    return refusals(inputs, keep, "trl", _TRL_UNUSED_WHY)


# ------------------------------------------------------------------------------ translate and run
def _translate(stage: str, parts: Sequence[Any]) -> tuple[dict[str, Any], list[str]]:
    """(native config values, problems: values the native trainer cannot honour + refused fields)."""
    inputs = RecipeInputs(*parts)
    problems: list[str] = []
    values: dict[str, Any] = {}
    for row in rows(stage):
        value = row.value(inputs, problems)
        if row.native is not None:
            values[row.native] = value
    return values, problems + refusals(inputs, honoured(stage), "native")


def translation_problems(stage: str, *parts: Any) -> list[str]:
    """Every problem `native_config` would raise (for `common.check_recipe`, so all show in one error)."""
    try:
        native_config(stage, *parts)
    except RecipeError as e:
        return e.problems
    return []


def native_config(stage: str, *parts: Any, problems: Sequence[str] = ()):
    """The native stage config (validated) for this recipe; raise `RecipeError` listing every problem.

    ``parts``: the parsed dataclasses (RecipeArguments, the trl config, ModelConfig, the stage's extras)."""
    from minimind_hf.native.config import ConfigError, load_config
    from minimind_hf.native.stages import get_stage

    values, found = _translate(stage, parts)
    problems = list(problems) + found
    cfg = None
    try:
        cfg = load_config(get_stage(TABLES[stage][0]).config_cls, None, values)
    except ConfigError as e:
        problems += [_in_recipe_names(stage, problem) for problem in e.problems]
    if problems:
        raise RecipeError(problems, f"recipe (backend native, stage {stage})")
    return cfg


def _in_recipe_names(stage: str, problem: str) -> str:
    """A native validation message in the recipe's vocabulary (``seq_len`` -> ``max_length``): the user wrote
    the YAML's keys, not the native ones. Only names read from exactly one recipe field are renamed."""
    import re

    for row in rows(stage):
        if row.native and len(row.reads) == 1 and row.reads[0] != row.native and "_" in row.native:
            problem = re.sub(rf"\b{re.escape(row.native)}\b", row.reads[0], problem)
    return problem


def run_native(stage: str, *parts: Any, problems: Sequence[str] = ()):
    """Translate, validate and run a native stage; returns its `TrainResult` (None for ``dry_run``)."""
    from minimind_hf.native.config import config_to_dict
    from minimind_hf.native.stages import get_stage

    cfg = native_config(stage, *parts, problems=problems)
    recipe_args = next(p for p in parts if isinstance(p, RecipeArguments))
    if recipe_args.dry_run:
        print(json.dumps({"backend": "native", "stage": stage, "config": config_to_dict(cfg)}, indent=2))
        return None
    logger.info("backend native: running minimind_hf.native %s", TABLES[stage][0])
    return get_stage(TABLES[stage][0]).run(cfg)


def markdown_table(stage: str) -> str:
    """The stage's own rows as a markdown table (recipes/README.md shows these and the common rows)."""
    lines = ["| recipe field(s) | native field | note |", "|---|---|---|"]
    for row in TABLES[stage][1] if stage != "common" else COMMON:
        reads = ", ".join(f"`{r}`" for r in row.reads)
        lines.append(f"| {reads} | {f'`{row.native}`' if row.native else '(recipe)'} | {row.note} |")
    return "\n".join(lines)


def readme_tables() -> str:
    """Every stage's table as recipes/README.md shows them (stages sharing a table are listed together)."""
    parts = [f"#### Every stage (common rows)\n\n{markdown_table('common')}\n"]
    shown: dict[int, str] = {}
    for stage, (_, stage_rows) in TABLES.items():
        if id(stage_rows) in shown:
            parts.append(
                f"#### `{stage}`: the `{shown[id(stage_rows)]}` rows (native stage `{TABLES[stage][0]}`)\n"
            )
            continue
        shown[id(stage_rows)] = stage
        title = f"`{stage}` (after the common rows; a row for the same native field replaces the common one)"
        parts.append(f"#### {title}\n\n{markdown_table(stage)}\n")
    return "\n".join(parts)


if __name__ == "__main__":  # python -m minimind_hf.recipes.native_bridge: the tables for recipes/README.md
    print(readme_tables())
