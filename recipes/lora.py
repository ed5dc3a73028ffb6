"""LoRA fine-tuning on chat conversations, with trl's ``SFTTrainer`` + peft or our native trainer.

    accelerate launch recipes/lora.py --config recipes/configs/tiny/lora.yaml
    accelerate launch recipes/lora.py --config recipes/configs/tiny/lora.yaml --backend native
    accelerate launch -m minimind_hf.recipes.lora --config ...          # after pip install

SFT data and loss (assistant tokens only, packed conversations; see ``recipes/sft.py``) with only low-rank
adapters trained: peft ``LoraConfig`` from trl's ``ModelConfig`` keys ``lora_r``, ``lora_alpha``,
``lora_dropout``, ``lora_target_modules`` (our linear names: q_proj k_proj v_proj o_proj gate_proj up_proj
down_proj; the original used rank 16 on q_proj and o_proj only). ``use_peft`` must be true: a LoRA recipe
that silently trained every weight would be a full SFT under the wrong name, so ``use_peft: false`` is an
error (use ``recipes/sft.py`` for a full fine-tune).

Output, both backends::

    output_dir/                  the adapter (peft format: adapter_config.json, adapter_model.safetensors),
                                 tokenizer; PeftModel.from_pretrained(base, output_dir) loads it
    output_dir/merged/           with ``merge: true`` (default): the base with the adapter folded in, a plain
                                 MiniMind folder
                                 (AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True))

Differences of ``backend: native`` (`minimind_hf.native.lora`): it writes the merged model to output_dir and
the adapter to output_dir/adapter; this recipe then moves them into the layout above (``merge: false``
deletes the merged copy, as the native stage always merges). Its checkpoints are ``output_dir/checkpoints/``
(trl: ``output_dir/checkpoint-N``). Only plain LoRA: ``use_rslora``, ``use_dora``, ``lora_modules_to_save``
and ``lora_target_parameters`` are refused there. ``adapter_config.json`` records the base model's absolute
path (or its Hub name), so the adapter loads from any working directory.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native

logger = logging.getLogger("minimind_hf.recipes")

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEEP_IN_OUTPUT = {"train_log.jsonl", "train_result.json", "checkpoints", "runs", "merged", "adapter"}
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


@dataclass
class LoraArguments:
    """LoRA-only recipe keys."""

    merge: bool = field(
        default=True,
        metadata={
            "help": "also write output_dir/merged: the base model with the adapter folded in "
            "(a plain MiniMind folder)"
        },
    )


def lora_problems(recipe_args, training_args, model_args) -> list[str]:
    p = []
    if not model_args.use_peft:
        p.append(
            "use_peft: false would fine-tune every weight; the LoRA recipe needs use_peft: true "
            "(for a full fine-tune use recipes/sft.py)"
        )
    targets = common.lora_targets(model_args)
    targets = [targets] if isinstance(targets, str) else targets
    if not targets:
        p.append(
            f"lora_target_modules is required: some of {', '.join(LINEAR_NAMES)} "
            "(the original: q_proj, o_proj)"
        )
    elif targets != ["all-linear"] and (unknown := [t for t in targets if t not in LINEAR_NAMES]):
        p.append(
            f"lora_target_modules: unknown {unknown}; MiniMind's linear layers are {', '.join(LINEAR_NAMES)} "
            "(or all-linear with backend trl)"
        )
    if model_args.lora_r <= 0:
        p.append(f"lora_r must be > 0, got {model_args.lora_r}")
    if not training_args.assistant_only_loss:
        p.append("assistant_only_loss: false trains on prompts too; MiniMind LoRA recipes keep it true")
    if recipe_args.backend == "native" and targets == ["all-linear"]:
        p.append(
            "lora_target_modules all-linear: list the names for the native backend "
            f"({', '.join(LINEAR_NAMES)})"
        )
    return p


def relayout_native(output_dir: str, base: str | None, merge: bool) -> None:
    """Native layout (merged model in output_dir, adapter in output_dir/adapter) -> the trl layout above."""
    out = Path(output_dir)
    merged_dir = out / "merged"
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    for stale in out.glob("adapter_*"):  # a previous run's relayout
        stale.unlink()
    files = [f for f in out.iterdir() if f.name not in _KEEP_IN_OUTPUT]
    if merge:
        merged_dir.mkdir()
        for f in files:
            shutil.move(str(f), merged_dir / f.name)
        for name in _TOKENIZER_FILES:
            if (merged_dir / name).is_file():
                shutil.copy2(merged_dir / name, out / name)
    else:
        for f in files:
            if f.name not in _TOKENIZER_FILES:
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    adapter = out / "adapter"
    for f in adapter.iterdir():
        shutil.move(str(f), out / f.name)
    adapter.rmdir()
    config_path = out / "adapter_config.json"
    meta = json.loads(config_path.read_text(encoding="utf-8"))
    meta["base_model_name_or_path"] = common.base_model_path(base)
    config_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def save_merged(trainer, tokenizer, output_dir: str) -> None:
    """Fold the trained adapter into the base weights and save a plain model folder (main process only)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    merged = model.merge_and_unload()
    path = Path(output_dir) / "merged"
    merged.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    logger.info("saved the merged model to %s", path)


def write_cards(output_dir: str, base: str | None, data: list[str], backend: str, merge: bool) -> None:
    """Model cards for the adapter (output_dir) and the merged model (output_dir/merged)."""
    from minimind_hf.model_card import write_model_card

    write_model_card(output_dir, stage="lora", backend=backend, base_model=base, data=data, adapter=True)
    if merge:
        extra = f"LoRA adapter ({output_dir}) merged into its base."
        write_model_card(
            Path(output_dir) / "merged",
            stage="lora",
            backend=backend,
            base_model=base,
            data=data,
            extra=extra,
        )


def main(recipe_args, training_args, model_args, lora_args=None) -> None:
    lora_args = lora_args or LoraArguments()
    common.prepare_runtime(recipe_args)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=lora_problems(recipe_args, training_args, model_args),
        needs_model="LoRA adapts a trained model (e.g. the SFT recipe's output_dir)",
        stage="lora",
        stage_args=(lora_args,),
    )
    if recipe_args.backend == "native":
        run_native("lora", recipe_args, training_args, model_args, lora_args)
        if common.is_main_process() and not recipe_args.dry_run:
            relayout_native(training_args.output_dir, model_args.model_name_or_path, lora_args.merge)
            write_cards(
                training_args.output_dir,
                model_args.model_name_or_path,
                list(recipe_args.data),
                "native",
                lora_args.merge,
            )
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    trainer, tokenizer = common.sft_trainer(recipe_args, training_args, model_args)
    common.train_and_save(
        trainer, "lora", recipe_args, training_args, model_args
    )  # a PeftModel saves the adapter only
    if trainer.accelerator.is_main_process:
        if lora_args.merge:
            save_merged(trainer, tokenizer, training_args.output_dir)
        write_cards(
            training_args.output_dir,
            model_args.model_name_or_path,
            list(recipe_args.data),
            "trl",
            lora_args.merge,
        )
    trainer.accelerator.wait_for_everyone()


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl SFTConfig, trl ModelConfig, LoraArguments) from ``--config FILE`` and
    ``--key value``."""
    from trl import SFTConfig

    return common.parse_recipe(SFTConfig, argv, extra_dataclasses=(LoraArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
