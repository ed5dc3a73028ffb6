"""Pretraining data: text records -> token ids (`datasets.map`, cached) -> packed fixed-length rows.

    ds = load_records("pretrain", files)                       # validated {"text"} rows
    ids = tokenize_texts(ds, tokenizer)                         # column "ids" (no eos yet), cached by datasets
    rows = pack_token_ids(ids["ids"], seq_len=512, eos_token_id=tokenizer.eos_token_id)   # a PackedDataset

Packing is `minimind_hf.data.packing.pack_documents` done with numpy over the whole corpus: every
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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .collate import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["PackedDataset", "pack_token_ids", "tokenize_texts"]


class PackedDataset:
    """Fixed-length rows held as numpy arrays (rows, seq_len): input_ids, position_ids, labels.

    ``len`` + ``__getitem__`` (a dict of int arrays), which is all the native loop needs."""

    def __init__(self, input_ids: np.ndarray, position_ids: np.ndarray, labels: np.ndarray):
        assert input_ids.shape == position_ids.shape == labels.shape and input_ids.ndim == 2
        self.input_ids, self.position_ids, self.labels = input_ids, position_ids, labels

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids[i],
            "position_ids": self.position_ids[i],
            "labels": self.labels[i],
        }

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def num_label_tokens(self) -> int:
        """Tokens that carry a loss (after the causal shift)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def num_documents(self) -> int:
        return int((self.position_ids == 0).sum())

    def select(self, indices: Sequence[int]) -> PackedDataset:
        idx = np.asarray(indices)
        return PackedDataset(self.input_ids[idx], self.position_ids[idx], self.labels[idx])


def tokenize_texts(
    dataset: Any, tokenizer: Any, num_proc: int | None = None, text_column: str = "text"
) -> Any:
    """`datasets.map` the texts to token ids (column ``ids``, no special tokens, no eos); cached by `datasets`.

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


def _flatten(docs: Iterable[Sequence[int]], eos_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(all tokens with eos after each document, document start offsets)."""
    pieces, starts, n = [], [], 0
    eos = np.array([eos_token_id], dtype=np.int32)
    for doc in docs:
        arr = np.asarray(doc, dtype=np.int32)
        starts.append(n)
        pieces += [arr, eos]
        n += len(arr) + 1
    if not pieces:
        raise ValueError("no documents to pack")
    return np.concatenate(pieces), np.asarray(starts, dtype=np.int64)


def pack_token_ids(
    docs: Iterable[Sequence[int]], seq_len: int, eos_token_id: int, drop_last: bool = False
) -> PackedDataset:
    """Pack token-id documents into rows of exactly `seq_len` (same rows as `pack_documents`, vectorised)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    flat, starts = _flatten(docs, eos_token_id)
    n = len(flat)
    rows = n // seq_len if drop_last else -(-n // seq_len)
    if rows == 0:
        raise ValueError(f"{n} tokens are fewer than one row of {seq_len} with drop_last=True")
    total = rows * seq_len
    ids = np.full(total, eos_token_id, dtype=np.int32)
    keep = min(n, total)
    ids[:keep] = flat[:keep]
    idx = np.arange(total, dtype=np.int64)
    is_start = np.zeros(total, dtype=bool)
    is_start[starts[starts < total]] = True
    is_start[::seq_len] = True  # a row start is a piece start
    last_start = np.maximum.accumulate(np.where(is_start, idx, 0))
    pos = (idx - last_start).astype(np.int32)
    labels = ids.copy()
    labels[is_start] = IGNORE_INDEX
    labels[keep:] = IGNORE_INDEX
    shape = (rows, seq_len)
    return PackedDataset(ids.reshape(shape), pos.reshape(shape), labels.reshape(shape))


def iter_ids(dataset: Any, column: str = "ids", batch_size: int = 10_000) -> Iterable[list[int]]:
    """Stream a token-id column out of a `datasets.Dataset` without materialising it twice."""
    for batch in dataset.iter(batch_size=batch_size):
        yield from batch[column]
