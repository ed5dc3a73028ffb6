"""SFT data: conversations -> chat template ids + assistant-only labels -> (optionally) packed rows.

    ds = load_records("sft", files)
    enc = tokenize_conversations(ds, tokenizer, max_length=768)      # columns input_ids, labels (cached)
    rows = packing.pack_sequences(enc, seq_len=768, pad_token_id=tokenizer.pad_token_id)   # a PackedDataset

Labels are the token ids the model generates in assistant turns, as marked by the template's
``{% generation %}`` blocks: reasoning, content, tool calls and the closing ``<|im_end|>``; never the
system, user or tool-response turns. A conversation longer than ``max_length`` is truncated; one whose
labels are then all masked (every assistant token past ``max_length``) is dropped and counted, so it can
never produce a 0/0 loss (the loop also clamps the token count to >= 1).

Packing (`minimind_hf.data.packing.pack_sequences`) keeps conversations whole: best-fit
decreasing into rows of ``seq_len`` tokens, positions restarting at 0 for each conversation, the rest of a
row filled with pad (label -100, positions continuing, so no attention mask is needed). Typical fill is
> 95 %; compare padding every conversation to ``max_length``.
"""

from __future__ import annotations

import logging
from typing import Any

from .collate import IGNORE_INDEX
from .rendering import encode_conversation

logger = logging.getLogger(__name__)

__all__ = ["assistant_mask_problem", "tokenize_conversations"]


def assistant_mask_problem(folder: str) -> str | None:
    """Why the tokenizer in local `folder` cannot mark the assistant's tokens (its chat template has no
    ``{% generation %}`` markers), read from its files without loading it; None if it can, or is not local."""
    import json
    from pathlib import Path

    from ..tokenizer.template import has_generation_markers

    path = Path(folder)
    if (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text(encoding="utf-8")
    elif (path / "tokenizer_config.json").is_file():
        try:
            template = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get(
                "chat_template"
            )
        except (ValueError, AttributeError):
            return None  # a broken folder is reported where it is loaded
    else:
        return None
    if isinstance(template, str) and has_generation_markers(template):
        return None
    return _NO_MARKERS.format(where=folder)


_NO_MARKERS = (
    "the chat template of {where} has no {{% generation %}} markers, so no token can be marked as the "
    "assistant's to learn from: use a tokenizer with MiniMind's template "
    "(minimind_hf.tokenizer.chat_template(); `convert from-pth` installs it when the original's renders the "
    "same), or add the markers around assistant turns"
)


def tokenize_conversations(dataset: Any, tokenizer: Any, max_length: int, num_proc: int | None = None) -> Any:
    """`datasets.map` SFT records to ``input_ids``/``labels`` (truncated to `max_length`); rows with no
    label left are dropped (logged)."""
    from ..tokenizer.template import has_generation_markers

    if not has_generation_markers(getattr(tokenizer, "chat_template", None)):
        raise ValueError(_NO_MARKERS.format(where=getattr(tokenizer, "name_or_path", "the tokenizer")))

    def encode(batch: dict) -> dict:
        out = {"input_ids": [], "labels": []}
        kwargs = batch.get("chat_template_kwargs") or [None] * len(batch["conversations"])
        for messages, tools, extra in zip(batch["conversations"], batch["tools"], kwargs, strict=False):
            enc = encode_conversation(tokenizer, messages, tools, max_length, **(extra or {}))
            out["input_ids"].append(enc["input_ids"])
            out["labels"].append(enc["labels"])
        return out

    if num_proc is not None and num_proc <= 1:
        num_proc = None
    enc = dataset.map(
        encode,
        batched=True,
        batch_size=256,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="chat template",
    )
    kept = enc.filter(
        lambda labels: any(t != IGNORE_INDEX for t in labels[1:]),
        input_columns="labels",
        desc="dropping rows without labels",
    )
    dropped = len(enc) - len(kept)
    if dropped:
        logger.warning(
            "dropped %d of %d conversations: no assistant token left within max_length=%d",
            dropped,
            len(enc),
            max_length,
        )
    if len(kept) == 0:
        raise ValueError(
            f"no conversation has an assistant token within max_length={max_length}; raise max_length"
        )
    return kept
