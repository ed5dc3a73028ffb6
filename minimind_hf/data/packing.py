"""Packing: token sequences into fixed-length rows with no padding waste, keeping document boundaries.

- `pack_token_ids` (pretraining): every document gets eos appended, documents are concatenated (numpy, the
  whole corpus at once) and cut into rows of exactly ``seq_len`` tokens; a long document is split over rows,
  never thrown away, and its continuation restarts positions at 0.
- `pack_sequences` (SFT): whole conversations, best-fit decreasing, into rows of ``seq_len`` (splitting one
  would train a reply without its prompt); the rest of a row is pad (label -100, positions continuing).
- `pack_documents`: the same rule as `pack_token_ids` in plain Python, row by row (the readable reference the
  tests compare it with).

Position ids restart at 0 at every document start, which is what tells transformers' mask builder (no
attention_mask given) to make a block-diagonal causal mask, and what flash/varlen kernels turn into
`cu_seqlens`: a token never attends across a document boundary. Labels equal input ids except at each
document's first token: with block-diagonal attention, predicting it would mean predicting a new document
from the end of the previous one, which is noise. `PackedDataset` holds the rows.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .collate import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["PackedDataset", "pack_documents", "pack_sequences", "pack_token_ids"]


def pack_documents(
    docs: Iterable[list[int]], seq_len: int, eos_token_id: int, drop_last: bool = False
) -> Iterator[dict]:
    """Yield rows `{"input_ids", "position_ids", "labels"}` of exactly `seq_len` tokens.

    The last, partial row is padded with eos (label -100, positions continuing) unless `drop_last`.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    ids: list[int] = []
    pos: list[int] = []
    labels: list[int] = []
    for doc in docs:
        doc = list(doc) + [eos_token_id]
        start = 0
        while start < len(doc):
            room = seq_len - len(ids)
            piece = doc[start : start + room]
            ids.extend(piece)
            pos.extend(range(len(piece)))
            labels.extend([IGNORE_INDEX] + piece[1:])
            start += len(piece)
            if len(ids) == seq_len:
                yield {"input_ids": ids, "position_ids": pos, "labels": labels}
                ids, pos, labels = [], [], []
    if ids and not drop_last:
        pad = seq_len - len(ids)
        last_pos = pos[-1]
        ids.extend([eos_token_id] * pad)
        pos.extend(range(last_pos + 1, last_pos + 1 + pad))
        labels.extend([IGNORE_INDEX] * pad)
        yield {"input_ids": ids, "position_ids": pos, "labels": labels}


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


def _best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: bins of item indices, each bin's total length <= capacity."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin id)
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            room, b = free.pop(k)
            bins[b].append(i)
            room -= n
        else:
            b = len(bins)
            bins.append([i])
            room = capacity - n
        if room > 0:
            bisect.insort(free, (room, b))
    return bins


def pack_sequences(dataset: Any, seq_len: int, pad_token_id: int) -> PackedDataset:
    """Pack whole sequences (rows with ``input_ids``/``labels`` of length <= seq_len) into fixed rows."""
    ids_col, labels_col = dataset["input_ids"], dataset["labels"]
    lengths = [len(x) for x in ids_col]
    too_long = [n for n in lengths if n > seq_len]
    if too_long:
        raise ValueError(f"{len(too_long)} sequences are longer than seq_len={seq_len}; truncate them first")
    bins = _best_fit(lengths, seq_len)
    rows = len(bins)
    ids = np.full((rows, seq_len), pad_token_id, dtype=np.int32)
    labels = np.full((rows, seq_len), IGNORE_INDEX, dtype=np.int32)
    pos = np.zeros((rows, seq_len), dtype=np.int32)
    for r, members in enumerate(bins):
        at = 0
        for i in members:
            n = lengths[i]
            ids[r, at : at + n] = ids_col[i]
            lab = np.asarray(labels_col[i], dtype=np.int32)
            lab[0] = IGNORE_INDEX  # never predict a conversation's first token from the previous one
            labels[r, at : at + n] = lab
            pos[r, at : at + n] = np.arange(n)
            at += n
        pos[r, at:] = np.arange(n, n + seq_len - at)  # padding continues the last sequence's positions
    packed = PackedDataset(ids, pos, labels)
    fill = sum(lengths) / (rows * seq_len)
    logger.info(
        "packed %d sequences into %d rows of %d (%.1f%% filled)", len(lengths), rows, seq_len, 100 * fill
    )
    return packed
