"""Pretraining: next-token prediction on packed text.

    minimind-hf train pretrain --config recipes/configs/tiny/pretrain.yaml [--key value ...]
    run_pretrain(load_config(PretrainConfig, None, {"data": [...], "seq_len": 256}))     # the Python API

Data: ``{"text": ...}`` records -> token ids + eos -> rows of exactly ``seq_len`` tokens with no padding
(`minimind_hf.data.pretrain_pipeline`). Position ids restart at 0 per document and there is no attention
mask, so attention is block-diagonal causal: a token only sees earlier tokens of its own document.

The objective, for the rows of one optimizer step (all micro-batches, all processes)::

    L(θ) = - 1/N Σ_{rows} Σ_{t : label_t != -100} log p_θ(x_t | x_<t within its document)

with ``N`` the number of label tokens of the step (`Algorithm.num_items`, all-reduced by the loop). The model
computes the shifted cross-entropy; `Algorithm.compute_loss` is exactly this loss.

If neither ``tokenizer`` nor ``model`` is given, a ByteLevel BPE tokenizer of ``vocab_size`` tokens is trained
on the training text first and saved with the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..data.packing import PackedDataset, pack_token_ids
from ..data.pretrain_pipeline import iter_ids, tokenize_texts
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

__all__ = ["Pretrain", "PretrainConfig", "build_pretrain", "run_pretrain"]


@dataclass
class PretrainConfig(TrainConfig):
    data: list[str] = field(default_factory=list)  # pretrain files/folders ({"text": ...} jsonl/json/parquet)
    eval_data: list[str] = field(default_factory=list)  # held-out files; empty = eval_ratio of `data`
    eval_ratio: float = 0.0  # fraction of documents held out for evaluation when eval_data is empty
    seq_len: int = 512
    max_documents: int = 0  # 0 = all
    vocab_size: int = 6400  # tokenizer size when one is trained here (no tokenizer and no model given)
    num_proc: int = 0  # processes for tokenising; 0 = automatic
    skip_invalid: bool = False  # drop (and count) malformed records instead of stopping
    # With Muon, AdamW's rate for the embeddings (= the tied lm_head) and norms; the block matrices use
    # muon_lr. On the quickstart-sized model the original's 5e-4 left the embeddings (half of its weights)
    # far behind: the original recipe's 200-step held-out loss came after 120 steps at 5e-4, 40 at 5e-3, 30 at
    # 1e-2 and 2e-2 (benchmarks/time_to_loss.py). 5e-3 is the tiny recipe's from-scratch rate; minimind3's
    # YAMLs keep the original's 5e-4. With optimizer: adamw it is every weight's rate.
    learning_rate: float = 5e-3
    # From scratch, Muon reached the original recipe's loss in ~60% of its steps (benchmarks/time_to_loss.py);
    # fine-tuning stages keep AdamW, which their starting weights were trained with.
    optimizer: str = "muon"

    def validate(self) -> list[str]:
        p = super().validate()
        p += check_data_files("data", self.data)
        p += check_data_files("eval_data", self.eval_data, required=False)
        if self.seq_len < 2:
            p.append(f"seq_len must be >= 2, got {self.seq_len}")
        if not 0.0 <= self.eval_ratio < 1.0:
            p.append(f"eval_ratio must be in [0, 1), got {self.eval_ratio}")
        if self.max_documents < 0:
            p.append(f"max_documents must be >= 0, got {self.max_documents}")
        return p


class Pretrain(Algorithm):
    """Causal LM on packed rows: the default `Algorithm` hooks (label-token count, shifted cross-entropy)."""

    name = "pretrain"
    compile_friendly = True  # every row is seq_len tokens


def _pack(records, tokenizer, cfg: PretrainConfig) -> PackedDataset:
    ids = tokenize_texts(records, tokenizer, num_proc=cfg.num_proc or None)
    packed = pack_token_ids(iter_ids(ids), cfg.seq_len, tokenizer.eos_token_id)
    return packed


def build_pretrain(cfg: PretrainConfig) -> Pretrain:
    """Load and pack the data, build tokenizer and model: everything `train` needs."""
    seed_everything(cfg.seed)
    records, eval_records = load_train_and_eval("pretrain", cfg, cfg.max_documents)

    tokenizer = load_tokenizer(cfg)
    if tokenizer is None:
        from ..tokenizer import train_tokenizer

        logger.info("no tokenizer given: training a %d-token tokenizer on the training text", cfg.vocab_size)
        tokenizer = train_tokenizer(records["text"], vocab_size=cfg.vocab_size, show_progress=False)

    train_rows = _pack(records, tokenizer, cfg)
    eval_rows = _pack(eval_records, tokenizer, cfg) if eval_records is not None else None
    logger.info(
        "pretrain data: %d documents -> %d rows of %d tokens (%d label tokens)%s",
        len(records),
        len(train_rows),
        cfg.seq_len,
        train_rows.num_label_tokens(),
        f"; eval {len(eval_rows)} rows" if eval_rows is not None else "",
    )
    seed_everything(cfg.seed)  # the model init does not depend on how much randomness the data used
    model = build_model(cfg, tokenizer)
    return Pretrain(cfg, model, tokenizer, train_rows, eval_rows)


def run_pretrain(cfg: PretrainConfig) -> TrainResult:
    return train(cfg, build_pretrain(cfg))


register_stage("pretrain", PretrainConfig, run_pretrain, help="next-token pretraining on packed text")
