"""What every recipe shares: the recipe arguments, the parser, data, model/tokenizer loading and saving.

A recipe is ``main(recipe_args, training_args, model_args)`` plus a `parse_recipe` call, in the style of
alignment-handbook / trl's own scripts::

    recipe_args, training_args, model_args = parse_recipe(SFTConfig)     # YAML + --flag overrides
    if recipe_args.backend == "native": return run_native("sft", ...)    # same YAML, our trainer
    ...                                                                    # else: trl / peft

The YAML holds keys of three dataclasses at once: `RecipeArguments` (ours: backend, data, preset...), the
trl config of the stage (``SFTConfig``, ``DPOConfig``, ...: learning_rate, per_device_train_batch_size...)
and trl's ``ModelConfig`` (model_name_or_path, attn_implementation, lora_r...). Unknown keys are rejected,
command-line flags (``--learning_rate 1e-4``) override the YAML, and `check_recipe` reports every problem
in one error before any work starts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("minimind_hf.recipes")

__all__ = [
    "BACKENDS",
    "LORA_FIELDS",
    "RecipeArguments",
    "RecipeError",
    "build_or_load_model",
    "check_recipe",
    "dry_run",
    "is_main_process",
    "launch_problems",
    "load_split",
    "load_tokenizer_for",
    "lora_targets",
    "native_optimizer",
    "parse_recipe",
    "peft_config",
    "peft_problems",
    "prepare_runtime",
    "resume_arg",
    "run_cli",
    "run_recipe",
    "save_final",
    "setup_logging",
    "sft_messages",
    "sft_trainer",
    "train_and_save",
]

BACKENDS = ("trl", "native")


class RecipeError(ValueError):
    """One or more problems with a recipe's arguments; the message lists them all."""

    def __init__(self, problems: Sequence[str], source: str = "recipe"):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in {source}:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


@dataclass
class RecipeArguments:
    """Recipe keys that are ours (the rest of the YAML belongs to trl's stage config and ModelConfig)."""

    backend: str = field(
        default="trl", metadata={"help": "trl (trl/peft trainers) or native (minimind_hf.native)"}
    )
    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "training data: local .jsonl/.json/.parquet files or folders, hub dataset names, or the "
            "built-in generated corpus demo:PART[:N] (PART = pretrain, sft, dpo, rl)"
        },
    )
    eval_data: list[str] = field(
        default_factory=list, metadata={"help": "held-out data (same forms as data)"}
    )
    eval_ratio: float = field(
        default=0.0, metadata={"help": "fraction of `data` held out when eval_data is empty"}
    )
    max_records: int = field(default=0, metadata={"help": "use only the first N records (0 = all)"})
    add_system_ratio: float = field(
        default=0.0,
        metadata={
            "help": "sft / lora (and native distill): this share of training conversations without a system "
            "turn get one of the original's system prompts (its 0.2); minimind_hf.data.augment"
        },
    )
    empty_think_ratio: float = field(
        default=1.0,
        metadata={
            "help": "sft / lora / dpo (and native distill): the share of training conversations that keep "
            "the empty think block of answers without reasoning (the original keeps 0.2); "
            "minimind_hf.data.augment"
        },
    )
    skip_invalid: bool = field(default=False, metadata={"help": "drop (and count) malformed records"})
    preset: str = field(
        default="tiny",
        metadata={"help": "MiniMindConfig preset for a new model (when model_name_or_path is not set)"},
    )
    model_overrides: str | None = field(
        default=None,
        metadata={"help": "extra MiniMindConfig fields for a new model: a YAML mapping or a JSON string"},
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "tokenizer folder (default: the model folder; pretrain trains one when neither is given)"
        },
    )
    num_threads: int = field(
        default=0,
        metadata={
            "help": "torch CPU threads per process (0: backend native times steps to choose; trl: torch's)"
        },
    )
    optimizer: str = field(
        default="adamw",
        metadata={
            "help": "adamw (trl: its `optim`), or muon (Muon at 0.02 for the block matrices, AdamW for the "
            "rest; minimind_hf.native.optim; the same optimizer under both backends)"
        },
    )
    dry_run: bool = field(
        default=False,
        metadata={
            "help": "validate the configuration (for backend native: also its translation), print it and exit"
        },
    )

    def overrides(self) -> dict:
        value = self.model_overrides
        if value is None or value == "":
            return {}
        if isinstance(value, dict):
            return dict(value)
        parsed = json.loads(value)
        if not isinstance(parsed, dict):
            raise ValueError(f"model_overrides must be a mapping, got {value!r}")
        return parsed


def setup_logging() -> None:
    """INFO logs on the main process, warnings elsewhere (transformers/datasets follow the same rule)."""
    from minimind_hf.cli_logging import configure_logging

    configure_logging(main_process=is_main_process())


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def parse_recipe(
    stage_config_cls: type, argv: Sequence[str] | None = None, extra_dataclasses: Sequence[type] = ()
) -> tuple:
    """Parse ``--config FILE`` plus ``--flag value`` overrides into (RecipeArguments, stage config,
    ModelConfig, *extra). Unknown keys in the YAML or on the command line are an error (listing nothing is
    silently ignored)."""
    from trl import ModelConfig, TrlParser

    use_cpu_when_no_accelerator()
    # allow_abbrev=False: argparse would take a typo such as --learning_rat for --learning_rate
    parser = TrlParser(
        (RecipeArguments, stage_config_cls, ModelConfig, *extra_dataclasses), allow_abbrev=False
    )
    args = list(sys.argv[1:] if argv is None else argv)
    # a missing, unreadable or non-mapping YAML is one named error, before trl reads it
    _read_config_file(args)
    try:
        parsed = parser.parse_args_and_config(args, fail_with_unknown_args=True)
    except ValueError as e:  # trl's "Unknown arguments from config file", transformers' value checks
        message = str(e)
        if "bf16" in message:  # trl defaults bf16 to true; CPUs (and old GPUs) need it off
            message += " (on a CPU set `bf16: false` in the YAML or pass --bf16 false)"
        raise RecipeError([message], _config_name(args)) from None
    parsed[0].given = given_keys(args)
    return tuple(parsed)


def _read_config_file(argv: Sequence[str]) -> dict:
    """The ``--config`` YAML as a mapping ({} without one); `RecipeError` naming the file (and the YAML line)
    when it is missing, a folder, not YAML, or not a mapping of keys."""
    import yaml

    argv = list(argv)
    if "--config" not in argv:
        return {}
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise RecipeError(["--config needs a YAML file"], "command line")
    path = Path(argv[i + 1])
    if not path.exists():
        raise RecipeError(
            [f"no such file {str(path)!r} (`minimind-hf recipes ls` lists the shipped configs)"], "--config"
        )
    if not path.is_file():
        raise RecipeError([f"{str(path)!r} is a folder, not a YAML file"], "--config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError([f"not UTF-8 text ({e.reason} at byte {e.start})"], str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise RecipeError([f"not valid YAML: {where}{what}"], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(
            [f"expected a mapping of keys (key: value lines), got a {type(data).__name__}"], str(path)
        )
    return data


def given_keys(argv: Sequence[str]) -> frozenset[str]:
    """The keys the user set: the ``--config`` YAML's plus the ``--key`` flags (so that a field left at its
    default, or filled in by a config class's ``__post_init__``, is never taken for a request)."""
    keys = set(_read_config_file(argv))
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            if name != "config":
                keys.add(name)
    return frozenset(keys)


def use_cpu_when_no_accelerator() -> None:
    """Several processes on a machine without GPUs: make transformers' Trainer join them into one gloo group.

    ``recipes/accelerate/cpu_2proc.yaml`` starts the processes with torchrun (accelerate's ``--cpu`` launcher
    starts only one unless MPI is set up); without this, each Trainer would think it runs alone."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def _config_name(argv: Sequence[str]) -> str:
    argv = list(argv)
    return argv[argv.index("--config") + 1] if "--config" in argv[:-1] else "command line"


def check_recipe(
    recipe_args: RecipeArguments,
    training_args: Any,
    model_args: Any,
    needs_model: str | None = None,
    extra: Sequence[str] = (),
    stage: str | None = None,
    stage_args: Sequence[Any] = (),
) -> None:
    """Validate what all recipes share; raise `RecipeError` listing every problem (plus `extra`). With
    ``backend: native``, also what the native translation of `stage` refuses (`stage_args`: the stage's extra
    dataclasses), so every problem shows in one error."""
    from minimind_hf.configuration_minimind import PRESETS
    from minimind_hf.native.common import check_data_files

    p = list(extra)
    if recipe_args.backend not in BACKENDS:
        p.append(f"backend must be one of {', '.join(BACKENDS)}, got {recipe_args.backend!r}")
    from minimind_hf.native.optim import OPTIMIZERS

    if recipe_args.optimizer not in OPTIMIZERS:
        p.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {recipe_args.optimizer!r}")
    elif recipe_args.backend == "trl" and recipe_args.optimizer == "muon" and "optim" in recipe_args.given:
        p.append(
            "optimizer: muon replaces trl's `optim` under backend trl (transformers has no Muon); "
            "unset `optim`"
        )
    p += check_data_files("data", recipe_args.data)
    p += check_data_files("eval_data", recipe_args.eval_data, required=False)
    p += _augmentation_problems(recipe_args, stage)
    if not 0.0 <= recipe_args.eval_ratio < 1.0:
        p.append(f"eval_ratio must be in [0, 1), got {recipe_args.eval_ratio}")
    try:
        recipe_args.overrides()
    except (ValueError, json.JSONDecodeError) as e:
        p.append(f"model_overrides: {e}")
    model = model_args.model_name_or_path
    if needs_model and not model:
        p.append(f"model_name_or_path is required: {needs_model}")
    if model and _looks_local(model) and not Path(model).is_dir():
        p.append(f"model_name_or_path: no such folder {model!r}")
    if not model and recipe_args.preset not in PRESETS:
        p.append(f"preset: unknown {recipe_args.preset!r}; valid: {', '.join(PRESETS)}")
    if (
        recipe_args.tokenizer
        and _looks_local(recipe_args.tokenizer)
        and not Path(recipe_args.tokenizer).is_dir()
    ):
        p.append(f"tokenizer: no such folder {recipe_args.tokenizer!r}")
    if model and recipe_args.overrides():
        p.append(f"model_overrides configure a new model; they cannot change {model!r} (unset one of them)")
    p += _model_problems(recipe_args, training_args, model_args)
    if not training_args.output_dir:
        p.append("output_dir is required")
    elif model and Path(model).is_dir() and Path(model).resolve() == Path(training_args.output_dir).resolve():
        p.append(
            f"output_dir is model_name_or_path {model!r}: the run would overwrite its input; choose a new one"
        )
    p += launch_problems(recipe_args.backend, training_args)
    p += _overwrite_problems(recipe_args.backend, training_args)
    p += peft_problems(model_args)
    if recipe_args.backend == "native" and stage is not None:
        from .native_bridge import TABLES, translation_problems

        if stage in TABLES:
            p += translation_problems(stage, recipe_args, training_args, model_args, *stage_args)
    if p:
        raise RecipeError(list(dict.fromkeys(p)))  # in order, each problem once


def _model_problems(recipe_args: RecipeArguments, training_args: Any, model_args: Any) -> list[str]:
    """Under backend trl, the model before any data is read: its folders, attention, overrides and sequence
    length (the native backend's validation checks the same on the translated config)."""
    import torch

    from minimind_hf.native.acceleration import attention_problem
    from minimind_hf.native.common import (
        folder_max_positions,
        folder_problems,
        length_problems,
        override_problems,
    )

    if recipe_args.backend == "native":
        return []
    model = model_args.model_name_or_path
    local = model if model and _looks_local(model) else None
    problems = folder_problems(local, recipe_args.tokenizer, "model_name_or_path")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if attention := attention_problem(model_args.attn_implementation or "sdpa", device):
        problems.append(attention)
    lengths = {"max_length": getattr(training_args, "max_length", None)}
    if model:
        return problems + length_problems(lengths, folder_max_positions(local) if local else None, model)
    try:
        found, config = override_problems(recipe_args.preset, recipe_args.overrides())
    except (ValueError, json.JSONDecodeError):
        return problems  # a malformed model_overrides is reported by check_recipe
    problems += found
    if config is not None:
        problems += length_problems(lengths, config.max_position_embeddings, f"preset {recipe_args.preset!r}")
    return problems


def _overwrite_problems(backend: str, training_args: Any) -> list[str]:
    """Checkpoints in output_dir that this backend would replace rather than resume: trl's Trainer starts over
    when ``resume_from_checkpoint`` is unset, and neither backend can resume the other's checkpoints. Starting
    over there is then a choice (``resume_from_checkpoint: false``), not a default. (A native run resumes or
    refuses its own checkpoints by itself, see `native.loop`.)"""
    resume = training_args.resume_from_checkpoint
    if not training_args.output_dir or str(resume).lower() == "false" or resume is False:
        return []
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(training_args.output_dir)
    if not out.is_dir():
        return []
    trl_last = get_last_checkpoint(str(out))
    native = (out / "checkpoints" / "latest").is_file()
    if backend == "trl" and resume is None and (trl_last or native):
        found = Path(trl_last).name if trl_last else "native checkpoints (checkpoints/)"
        return [
            f"output_dir {str(out)!r} holds {found} of an earlier run: resume_from_checkpoint: true to "
            "continue it, false to start over (its checkpoints are replaced), or a new output_dir"
        ]
    if backend == "native" and trl_last and not native:
        return [
            f"output_dir {str(out)!r} holds trl's {Path(trl_last).name}, which the native backend cannot "
            "resume: backend: trl to continue it, resume_from_checkpoint: false to start over, "
            "or a new output_dir"
        ]
    return []


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def launch_problems(backend: str, training_args: Any) -> list[str]:
    """FSDP / DeepSpeed launches that cannot be honoured here (never a silent fallback to plain DDP)."""
    import torch

    sharded = []
    if _env_flag("ACCELERATE_USE_FSDP") or getattr(training_args, "fsdp", None):
        sharded.append("FSDP")
    if _env_flag("ACCELERATE_USE_DEEPSPEED") or getattr(training_args, "deepspeed", None):
        sharded.append("DeepSpeed")
    if not sharded:
        return []
    what = " and ".join(sharded)
    if not torch.cuda.is_available():
        return [
            f"this run was launched with {what} (an accelerate config or TrainingArguments), but this "
            "machine has no CUDA GPU: accelerate would quietly run plain DDP on the CPU instead. Launch with "
            "--config_file recipes/accelerate/cpu_2proc.yaml (DDP over gloo), or run on GPUs"
        ]
    if backend == "native":
        return [
            f"backend native runs DDP only; this run was launched with {what}. Use backend: trl for {what}, "
            "or launch with --config_file recipes/accelerate/ddp.yaml"
        ]
    return []


LORA_FIELDS = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "lora_target_parameters",
    "lora_modules_to_save",
    "lora_task_type",
    "use_rslora",
    "use_dora",
)


def peft_problems(model_args: Any) -> list[str]:
    """LoRA fields set while ``use_peft`` is false would be ignored: refuse them."""
    if model_args.use_peft:
        return []
    defaults = type(model_args)()
    changed = [n for n in LORA_FIELDS if getattr(model_args, n) != getattr(defaults, n)]
    if not changed:
        return []
    return [
        f"{', '.join(changed)} set but use_peft is false: set use_peft: true to train LoRA adapters, "
        "or unset them"
    ]


def lora_targets(model_args: Any) -> list[str] | str:
    """``lora_target_modules`` as peft wants it: trl turns a one-item list into a string, which peft would
    read as a regex over full module names; give peft the list again (``all-linear`` stays a string)."""
    targets = model_args.lora_target_modules
    if targets is None:
        return []
    targets = [targets] if isinstance(targets, str) else list(targets)
    return "all-linear" if targets == ["all-linear"] else targets


def peft_config(model_args: Any):
    """trl's ``get_peft_config`` (a peft ``LoraConfig`` from ModelConfig; None unless ``use_peft``), with the
    target names as in `lora_targets`."""
    from trl import get_peft_config

    config = get_peft_config(model_args)
    if config is not None:
        config.target_modules = lora_targets(model_args)
    return config


def resume_arg(training_args: Any) -> bool | str | None:
    """``resume_from_checkpoint`` as ``Trainer.train`` takes it: ``true`` = the latest checkpoint in
    output_dir (transformers wants the bool; a YAML or command-line ``true`` arrives as the string "true")."""
    value = training_args.resume_from_checkpoint
    if value is None or value is False or str(value).lower() in ("", "false", "none"):
        return None
    if value is True or str(value).lower() == "true":
        return True
    return value


def base_model_path(base: str | None) -> str | None:
    """What an adapter records as its base: a local folder's absolute path, or the Hub name as given."""
    if base and Path(base).is_dir():
        return str(Path(base).resolve())
    return base


def record_adapter_base(adapter_dir: str) -> None:
    """Make ``adapter_config.json``'s ``base_model_name_or_path`` absolute (`base_model_path`): peft writes
    the path as the model was loaded, often relative to the launch directory."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["base_model_name_or_path"] = base_model_path(meta.get("base_model_name_or_path"))
    path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def train_and_save(
    trainer: Any, stage: str, recipe_args: RecipeArguments, training_args: Any, model_args: Any
) -> None:
    """``trainer.train`` (resuming as asked), `save_final`, and the output folder's model card."""
    trainer.train(resume_from_checkpoint=resume_arg(training_args))
    save_final(trainer, training_args.output_dir)
    if trainer.accelerator.is_main_process:
        from minimind_hf.model_card import write_model_card

        write_model_card(
            training_args.output_dir,
            stage=stage,
            backend="trl",
            base_model=model_args.model_name_or_path,
            data=list(recipe_args.data),
            adapter=(Path(training_args.output_dir) / "adapter_config.json").is_file(),
        )
        write_trl_report(trainer, stage, training_args.output_dir)


def write_trl_report(trainer: Any, stage: str, output_dir: str) -> None:
    """``report.md`` + curves from the Trainer's ``log_history`` (the same report the native loop writes)."""
    from minimind_hf.report import step_records, write_stage_report

    history = trainer.state.log_history
    summary = next((row for row in reversed(history) if "train_runtime" in row), {})
    records = [row for row in step_records(history) if "train_runtime" not in row]
    losses = [row["loss"] for row in records if isinstance(row.get("loss"), (int, float))]
    facts = {
        "steps": trainer.state.global_step,
        "final loss": losses[-1] if losses else None,
        "train loss (mean)": summary.get("train_loss"),
        "seconds": summary.get("train_runtime"),
        "tokens seen": trainer.state.num_input_tokens_seen or None,
    }
    write_stage_report(output_dir, stage, records, facts, backend="trl")


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name).exists()


def load_split(kind: str, recipe_args: RecipeArguments, seed: int, tokenizer: Any = None) -> tuple[Any, Any]:
    """(train, eval) `datasets.Dataset` of validated records (`minimind_hf.data.load_records`); eval may be
    None. With a `tokenizer`, sft / dpo training records get the original's augmentation when asked
    (``add_system_ratio``, ``empty_think_ratio``; `minimind_hf.data.augment`), as the native trainers do.

    Both backends call this with the same arguments, so they see the same records and the same split."""
    from minimind_hf.data import load_records
    from minimind_hf.data.augment import augment_records
    from minimind_hf.native.common import split_records

    records = load_records(kind, recipe_args.data, skip_invalid=recipe_args.skip_invalid)
    if recipe_args.max_records:
        records = records.select(range(min(recipe_args.max_records, len(records))))
    if recipe_args.eval_data:
        train, evaluation = (
            records,
            load_records(kind, recipe_args.eval_data, skip_invalid=recipe_args.skip_invalid),
        )
    else:
        train, evaluation = split_records(records, recipe_args.eval_ratio, seed)
    if tokenizer is not None and kind in ("sft", "dpo"):
        train = augment_records(
            train,
            kind=kind,
            add_system_ratio=recipe_args.add_system_ratio,
            empty_think_ratio=recipe_args.empty_think_ratio,
            seed=seed,
            tokenizer=tokenizer,
        )
    return train, evaluation


# which augmentation each recipe stage honours (see minimind_hf.data.augment), per backend
_AUGMENTS = {
    "sft": ("add_system_ratio", "empty_think_ratio"),
    "lora": ("add_system_ratio", "empty_think_ratio"),
    "dpo": ("empty_think_ratio",),
    ("distill", "native"): ("add_system_ratio", "empty_think_ratio"),
}
_AUGMENTED_BY = {
    "add_system_ratio": "sft, lora and native distill",
    "empty_think_ratio": "sft, lora, dpo and native distill",
}


def _augmentation_problems(recipe_args: RecipeArguments, stage: str | None) -> list[str]:
    from minimind_hf.data.augment import augmentation_problems

    p = augmentation_problems(recipe_args.add_system_ratio, recipe_args.empty_think_ratio)
    honoured = _AUGMENTS.get(stage) or _AUGMENTS.get((stage, recipe_args.backend), ())
    for name, off in (("add_system_ratio", 0.0), ("empty_think_ratio", 1.0)):
        if getattr(recipe_args, name) != off and name not in honoured:
            p.append(
                f"{name}: the {stage or 'this'} recipe (backend {recipe_args.backend}) does not augment its "
                f"data; it applies to {_AUGMENTED_BY[name]}"
            )
    return p


def load_tokenizer_for(recipe_args: RecipeArguments, model_args: Any):
    """The tokenizer from ``tokenizer`` or else the model folder/hub name; None when neither is set."""
    from transformers import AutoTokenizer

    source = recipe_args.tokenizer or model_args.model_name_or_path
    if source is None:
        return None
    return AutoTokenizer.from_pretrained(source)


def prepare_runtime(recipe_args: RecipeArguments) -> None:
    """Process-wide settings every recipe applies first (logging, CPU threads)."""
    import torch

    setup_logging()
    if recipe_args.num_threads > 0:
        torch.set_num_threads(recipe_args.num_threads)


def _quantization(model_args: Any) -> dict:
    """trl's bitsandbytes settings (``load_in_4bit`` / ``load_in_8bit``) as from_pretrained kwargs."""
    from trl import get_quantization_config

    config = get_quantization_config(model_args)
    if config is None:
        return {}
    from accelerate import PartialState

    return {"quantization_config": config, "device_map": {"": PartialState().local_process_index}}


def build_or_load_model(
    recipe_args: RecipeArguments,
    model_args: Any,
    tokenizer: Any,
    trust_remote_code: bool = False,
    init_kwargs: dict | None = None,
):
    """``model_name_or_path`` loaded with AutoModelForCausalLM (fp32 unless ``dtype`` says otherwise; trl's
    ``model_init_kwargs`` and bitsandbytes settings applied), or a new MiniMind from ``preset`` +
    ``model_overrides`` sized to the tokenizer. (MiniMind folders need no ``trust_remote_code`` here:
    importing minimind_hf registers the Auto classes.)"""
    import torch
    from transformers import AutoModelForCausalLM

    from minimind_hf import MiniMindConfig, MiniMindForCausalLM

    attn = model_args.attn_implementation or "sdpa"
    if model_args.model_name_or_path:
        dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "float32"
        kwargs = {
            **(init_kwargs or {}),
            "dtype": getattr(torch, dtype),
            "attn_implementation": attn,
            "trust_remote_code": trust_remote_code,
            "revision": model_args.model_revision,
            **_quantization(model_args),
        }
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    else:
        overrides = recipe_args.overrides()
        overrides.setdefault("vocab_size", len(tokenizer))
        overrides.setdefault("attn_implementation", attn)
        model = MiniMindForCausalLM(MiniMindConfig.from_preset(recipe_args.preset, **overrides))
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size} "
            "embeddings: use the tokenizer the model was trained with"
        )
    logger.info(
        "model: %.2fM parameters (%s)",
        sum(p.numel() for p in model.parameters()) / 1e6,
        model_args.model_name_or_path or f"new {recipe_args.preset}",
    )
    return model


def sft_trainer(recipe_args, training_args, model_args):
    """(trl SFTTrainer with the native weight-decay grouping, tokenizer) on the recipe's conversations and
    model; LoRA adapters when ``use_peft``."""
    from trl import SFTTrainer

    tokenizer = load_tokenizer_for(recipe_args, model_args)
    train, evaluation = load_split("sft", recipe_args, training_args.seed, tokenizer)
    model = build_or_load_model(
        recipe_args, model_args, tokenizer, training_args.trust_remote_code, training_args.model_init_kwargs
    )
    trainer = native_optimizer(SFTTrainer, recipe_args.optimizer)(
        model=model,
        args=training_args,
        train_dataset=sft_messages(train),
        eval_dataset=sft_messages(evaluation) if evaluation is not None else None,
        processing_class=tokenizer,
        peft_config=peft_config(model_args),
    )
    return trainer, tokenizer


def sft_messages(records):
    """trl's conversational form: a ``messages`` column (our records call it ``conversations``)."""
    return records.rename_column("conversations", "messages")


def dry_run(recipe_args: RecipeArguments, training_args: Any, model_args: Any) -> bool:
    """With ``--dry_run``: print the parsed configuration as JSON and return True (the caller stops)."""
    if not recipe_args.dry_run:
        return False
    import dataclasses

    shown = {
        "recipe": dataclasses.asdict(recipe_args),
        "model": dataclasses.asdict(model_args),
        "training": training_args.to_dict(),
    }
    print(json.dumps(shown, indent=2, default=str))
    return True


def run_recipe(main: Any, parse_args: Any) -> int:
    """Parse and run a recipe; configuration and data errors become one clear message (file:line:field for bad
    records) and exit status 2 instead of a traceback. Returns the exit status."""
    from minimind_hf.data import RecordError
    from minimind_hf.native.config import ConfigError

    try:
        main(*parse_args())
    except (RecipeError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RecordError as e:
        print(f"error: invalid data: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:  # e.g. fewer rows than one optimizer step needs
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run_cli(main: Any, parse_args: Any) -> None:
    """A recipe's ``__main__``: `run_recipe`, exiting with its status (other failures as one line too)."""
    from minimind_hf.cli_errors import run_guarded

    status = run_guarded(lambda: run_recipe(main, parse_args))
    if status:
        sys.exit(status)


def native_optimizer(trainer_cls: type, optimizer: str = "adamw") -> type:
    """``trainer_cls`` taking the native loop's optimizer steps, so one YAML trains the same way on both
    backends (tests/recipes/test_parity_sft.py):

    - AdamW grouped as the native loop groups it: transformers' Trainer exempts only biases and norms, so the
      tied ``embed_tokens`` / ``lm_head`` matrix would decay under trl and not natively;
    - ``optimizer: muon``: `minimind_hf.native.optim`'s Muon + AdamW split (transformers has no Muon), over
      the same groups and with the native defaults for Muon's settings;
      the Trainer's scheduler drives both halves.
    """
    from minimind_hf.native.loop import TrainConfig
    from minimind_hf.native.optim import build_optimizer

    class NativeOptimizerTrainer(trainer_cls):
        def get_decay_parameter_names(self, model):
            return [n for n in super().get_decay_parameter_names(model) if "embed" not in n]

        def create_optimizer(self, model=None):
            if optimizer != "muon":
                return super().create_optimizer(model)
            if self.optimizer is None:
                model = model if model is not None else self.model
                decay = set(self.get_decay_parameter_names(model))
                trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
                groups = [
                    {
                        "params": [p for n, p in trainable if n in decay],
                        "weight_decay": self.args.weight_decay,
                    },
                    {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0},
                ]
                a = self.args
                cfg = TrainConfig(
                    optimizer="muon",
                    learning_rate=a.learning_rate,
                    weight_decay=a.weight_decay,
                    adam_beta1=a.adam_beta1,
                    adam_beta2=a.adam_beta2,
                    adam_eps=a.adam_epsilon,
                )
                self.optimizer = build_optimizer(cfg, [g for g in groups if g["params"]], model)
            return self.optimizer

        def _get_learning_rate(self) -> float:
            if optimizer != "muon":
                return super()._get_learning_rate()
            # the log's learning_rate is the rate of `learning_rate` (AdamW's groups come last; the first is
            # Muon's muon_lr), as the native loop logs it
            return self.lr_scheduler.get_last_lr()[-1]

    NativeOptimizerTrainer.__name__ = NativeOptimizerTrainer.__qualname__ = trainer_cls.__name__
    return NativeOptimizerTrainer


def save_final(trainer: Any, output_dir: str) -> None:
    """Save the trained model as a Hugging Face folder (weights, config with auto_map, code, tokenizer)."""
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        record_adapter_base(output_dir)  # a PeftModel saved its adapter only
    trainer.save_state()  # trainer_state.json (the log history) beside the model, even with save_strategy: no
    if trainer.accelerator.is_main_process:
        logger.info(
            "saved %s (loads with AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True))",
            output_dir,
        )
