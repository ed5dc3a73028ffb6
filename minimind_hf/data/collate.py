"""Turn rows into batches, and render conversations into token ids + labels (shared by every trainer).

Rows are dicts of equal-length-per-row lists/arrays: ``input_ids``, ``labels`` and optionally
``position_ids``. `collate_rows` right-pads a list of rows to the longest one and returns tensors:

- ``input_ids`` padded with ``pad_token_id``, ``labels`` padded with -100;
- ``position_ids`` continue counting through the padding (so a padded row is one "document" whose
  tail nobody attends to: with causal attention and right padding, real tokens never see pads) - hence
  **no attention mask**, which keeps sdpa on its fast path and lets packed rows (positions restarting at
  0 per document) get the block-diagonal causal mask from transformers.

`encode_conversation` renders a conversation with the chat template and labels exactly the tokens the
model generates (assistant content, reasoning, tool calls and `<|im_end|>`; not system/user/tool turns).
`encode_prompt` renders a prompt for generation (RL) with ``open_thinking`` as configured.
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
    "encode_conversation",
    "encode_prompt",
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
    """Right-pad rows to the longest (or `pad_to`) and stack: input_ids, labels, position_ids (no attention mask)."""
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


def encode_conversation(
    tokenizer: Any,
    messages: list[dict],
    tools: list | None = None,
    max_length: int | None = None,
    **template_kwargs: Any,
) -> dict[str, list[int]]:
    """Chat-template a conversation; labels = ids on the assistant-generated tokens, -100 elsewhere.

    Truncated to `max_length` tokens from the right. The result may have no label at all (every
    assistant token beyond `max_length`): callers drop such rows (and the loop never divides by 0).
    `template_kwargs` go to the chat template (a record's ``chat_template_kwargs``, e.g. ``drop_empty_think``)."""
    enc = tokenizer.apply_chat_template(
        messages,
        tools=tools or None,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        **template_kwargs,
    )
    ids = list(enc["input_ids"])
    mask = list(enc["assistant_masks"])
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=False)]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def encode_prompt(
    tokenizer: Any,
    messages: list[dict],
    tools: list | None = None,
    open_thinking: bool = False,
) -> list[int]:
    """Token ids of a prompt ready for generation (ends with the assistant header; with `open_thinking`
    it ends in ``<think>\\n``, otherwise in the closed empty think block)."""
    enc = tokenizer.apply_chat_template(
        messages,
        tools=tools or None,
        tokenize=True,
        return_dict=True,
        add_generation_prompt=True,
        open_thinking=open_thinking,
    )
    return list(enc["input_ids"])
