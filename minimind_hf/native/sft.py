"""Supervised fine-tuning: learn the assistant turns of chat conversations.

    minimind-hf train sft --config recipes/configs/tiny/sft.yaml --model_name_or_path runs/pretrain
    run_sft(load_config(SFTConfig, None, {"model": "runs/pretrain", "data": [...]}))   # the Python API

Data: SFT records -> the chat template -> ``labels`` = the tokens the model itself generates in assistant
turns (reasoning, content, tool calls, the closing ``<|im_end|>``); system, user and tool-response tokens get
-100 (`minimind_hf.data.sft_pipeline`). With ``packing: true`` (default) whole conversations are packed
into rows of ``max_length`` with per-conversation position ids (block-diagonal attention, no padding
mask); otherwise each batch is right-padded to its longest conversation.

The objective for one optimizer step::

    L(θ) = - 1/N Σ_{conversations} Σ_{t ∈ assistant tokens} log p_θ(x_t | x_<t)

``N`` = assistant tokens of the step over all micro-batches and processes, so long and short replies weigh
per token, exactly as with one big batch. A conversation truncated so that no assistant token remains is
dropped while tokenising; a step with no label at all would give 0, not NaN (the loop clamps N >= 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

from ..data.augment import augment_records, augmentation_problems
from ..data.collate import collate_rows
from ..data.packing import pack_sequences
from ..data.sft_pipeline import assistant_mask_problem, tokenize_conversations
from .common import (
    build_model,
    check_data_files,
    load_tokenizer,
    load_train_and_eval,
    seed_everything,
)
from .loop import Algorithm, TrainConfig, TrainResult, train
from .stages import register_stage

logger = logging.getLogger(__name__)

__all__ = ["SFT", "SFTConfig", "build_sft", "run_sft"]


@dataclass
class SFTConfig(TrainConfig):
    data: list[str] = field(default_factory=list)  # SFT files/folders ({"conversations": [...]})
    eval_data: list[str] = field(default_factory=list)
    eval_ratio: float = 0.0
    max_length: int = 768  # tokens per conversation (truncated) and per packed row
    packing: bool = True
    max_conversations: int = 0  # 0 = all
    num_proc: int = 0
    skip_invalid: bool = False
    add_system_ratio: float = (
        0.0  # share given one of the original's system prompts (data.augment; original 0.2)
    )
    empty_think_ratio: float = 1.0  # share keeping the empty think block (data.augment; original 0.2)
    learning_rate: float = 1e-5

    def validate(self) -> list[str]:
        p = super().validate()
        p += check_data_files("data", self.data)
        p += check_data_files("eval_data", self.eval_data, required=False)
        if self.model is None and self.tokenizer is None:
            p.append(
                "SFT needs `model` (a pretrained HF folder, e.g. model=runs/pretrain) or at least `tokenizer`"
            )
        if self.max_length < 8:
            p.append(f"max_length must be >= 8, got {self.max_length}")
        source = self.tokenizer or self.model
        if source is not None and (problem := assistant_mask_problem(source)) is not None:
            p.append(problem)
        if not 0.0 <= self.eval_ratio < 1.0:
            p.append(f"eval_ratio must be in [0, 1), got {self.eval_ratio}")
        p += augmentation_problems(self.add_system_ratio, self.empty_think_ratio)
        return p


class SFT(Algorithm):
    """Causal LM on assistant tokens only: the default hooks; the masking lives in the labels."""

    name = "sft"

    @property
    def compile_friendly(self) -> bool:
        return self.cfg.packing  # packed rows all have max_length tokens; unpacked ones vary


def _rows(records, tokenizer, cfg: SFTConfig):
    enc = tokenize_conversations(records, tokenizer, cfg.max_length, num_proc=cfg.num_proc or None)
    if cfg.packing:
        return pack_sequences(enc, cfg.max_length, tokenizer.pad_token_id)
    return enc.with_format(None)


def build_sft(cfg: SFTConfig) -> SFT:
    seed_everything(cfg.seed)
    records, eval_records = load_train_and_eval("sft", cfg, cfg.max_conversations)
    tokenizer = load_tokenizer(cfg)
    records = augment_records(
        records,
        kind="sft",
        add_system_ratio=cfg.add_system_ratio,
        empty_think_ratio=cfg.empty_think_ratio,
        seed=cfg.seed,
        tokenizer=tokenizer,
    )
    train_rows = _rows(records, tokenizer, cfg)
    eval_rows = _rows(eval_records, tokenizer, cfg) if eval_records is not None else None
    logger.info(
        "sft data: %d conversations -> %d rows%s",
        len(records),
        len(train_rows),
        " (packed)" if cfg.packing else "",
    )
    seed_everything(cfg.seed)
    model = build_model(cfg, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return SFT(
        cfg, model, tokenizer, train_rows, eval_rows, collate_fn=partial(collate_rows, pad_token_id=pad)
    )


def run_sft(cfg: SFTConfig) -> TrainResult:
    return train(cfg, build_sft(cfg))


register_stage("sft", SFTConfig, run_sft, help="supervised fine-tuning on chat conversations")
