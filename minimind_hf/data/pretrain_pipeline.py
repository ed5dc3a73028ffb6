"""Pretraining data: text records -> token ids (`datasets.map`, cached) -> packed fixed-length rows.

    ds = load_records("pretrain", files)    # validated {"text"} rows
    ids = tokenize_texts(ds, tokenizer)     # column "ids" (no eos yet), cached by datasets
    rows = packing.pack_token_ids(          # a PackedDataset
        ids["ids"], seq_len=512, eos_token_id=tokenizer.eos_token_id
    )

Packing is `minimind_hf.data.packing.pack_token_ids` (see there): every
document gets eos appended, documents are concatenated and cut into rows of exactly ``seq_len`` tokens.
Position ids restart at 0 at every document start *and* at every row start (a document split over two
rows continues in the next row with positions from 0: it is split, never thrown away). Labels are the ids
except at each piece's first token (-100): with the block-diagonal mask, predicting a document's first
token from the previous document would be noise. Only the last row can hold padding (eos, label -100).
With no attention mask, transformers builds the block-diagonal causal mask from the position ids for
eager/sdpa/flex, and flash-attention takes the `cu_seqlens` path: no token attends across a document.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["iter_ids", "tokenize_texts"]


def tokenize_texts(
    dataset: Any, tokenizer: Any, num_proc: int | None = None, text_column: str = "text"
) -> Any:
    """`datasets.map` the texts to token ids (column ``ids``, no special tokens, no eos);
    cached by `datasets`.

    ``num_proc`` None = one process for small sets, up to 4 for > 50k documents (fast tokenizers are
    already multithreaded inside a batch, so more processes help only on big corpora)."""
    if num_proc is None:
        num_proc = min(4, os.cpu_count() or 1) if len(dataset) > 50_000 else None
    if num_proc is not None and num_proc <= 1:
        num_proc = None

    def encode(batch: dict) -> dict:
        return {"ids": tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]}

    return dataset.map(
        encode,
        batched=True,
        batch_size=1000,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="tokenising",
    )


def iter_ids(dataset: Any, column: str = "ids", batch_size: int = 10_000) -> Iterable[list[int]]:
    """Stream a token-id column out of a `datasets.Dataset` without materialising it twice."""
    for batch in dataset.iter(batch_size=batch_size):
        yield from batch[column]
