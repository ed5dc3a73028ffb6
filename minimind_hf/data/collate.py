"""Turn rows into batches, and render conversations into token ids + labels (shared by every trainer).

Rows are dicts of equal-length-per-row lists/arrays: ``input_ids``, ``labels`` and optionally
``position_ids``. `collate_rows` right-pads a list of rows to the longest one and returns tensors:

- ``input_ids`` padded with ``pad_token_id``, ``labels`` padded with -100;
- ``position_ids`` continue counting through the padding (so a padded row is one "document" whose
  tail nobody attends to: with causal attention and right padding, real tokens never see pads) - hence
  **no attention mask**, which keeps sdpa on its fast path and lets packed rows (positions restarting at
  0 per document) get the block-diagonal causal mask from transformers.

Rendering conversations with the chat template is `minimind_hf.data.rendering`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "collate_rows",
]


def _as_list(x: Any) -> list:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return list(x)


def collate_rows(
    rows: Sequence[dict], pad_token_id: int = 0, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest (or `pad_to`) and stack: input_ids, labels, position_ids
    (no attention mask)."""
    if not rows:
        raise ValueError("collate_rows got an empty batch")
    first = rows[0]["input_ids"]
    if (
        pad_to is None
        and isinstance(first, np.ndarray)
        and all(isinstance(r["input_ids"], np.ndarray) and len(r["input_ids"]) == len(first) for r in rows)
    ):  # fixed-length packed rows: stack without Python loops
        out = {
            "input_ids": torch.from_numpy(np.stack([r["input_ids"] for r in rows])).long(),
            "labels": torch.from_numpy(np.stack([r["labels"] for r in rows])).long(),
        }
        if rows[0].get("position_ids") is not None:
            out["position_ids"] = torch.from_numpy(np.stack([r["position_ids"] for r in rows])).long()
        return out
    ids = [_as_list(r["input_ids"]) for r in rows]
    labels = [_as_list(r["labels"]) if "labels" in r else list(i) for r, i in zip(rows, ids, strict=False)]
    positions = [
        _as_list(r["position_ids"]) if r.get("position_ids") is not None else list(range(len(i)))
        for r, i in zip(rows, ids, strict=False)
    ]
    width = max(len(i) for i in ids) if pad_to is None else pad_to
    out_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    out_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    out_pos = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (i, lab, pos) in enumerate(zip(ids, labels, positions, strict=False)):
        n = min(len(i), width)
        out_ids[b, :n] = torch.tensor(i[:n])
        out_labels[b, :n] = torch.tensor(lab[:n])
        out_pos[b, :n] = torch.tensor(pos[:n])
        if n < width:
            start = (pos[n - 1] + 1) if n else 0
            out_pos[b, n:] = torch.arange(start, start + width - n)
    return {"input_ids": out_ids, "labels": out_labels, "position_ids": out_pos}
