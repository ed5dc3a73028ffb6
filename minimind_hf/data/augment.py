"""The original MiniMind's chat-data augmentation for SFT and DPO, as options (off by default).

- ``add_system_ratio``: that share of conversations that have no system turn (and no tools) get one, drawn
  from `ORIGINAL_SYSTEM_PROMPTS` (the original's ten; the original uses 0.2 in SFT);
- ``empty_think_ratio``: the share of conversations that *keep* the empty ``<think>\\n\\n</think>\\n\\n``
  block of answers without reasoning; the others are rendered without it (the original keeps 0.2, i.e. drops
  it 80% of the time, in SFT and DPO).

The draws are made once per record from ``seed`` (`random.Random`), before tokenising, so a run is
reproducible and the tokenised cache is reused; the original redraws each epoch. The dropped block is a chat
template switch (``drop_empty_think``, which MiniMind's template implements outside the generation markers, so
the trained tokens are the same), passed per record as ``chat_template_kwargs`` (trl's per-example
convention, which the native trainers read too). A DPO pair gets one draw: its prompt is shared by both
answers (the original draws chosen and rejected separately).
"""

from __future__ import annotations

import logging
import random
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "ORIGINAL_SYSTEM_PROMPTS",
    "augment_records",
    "augmentation_problems",
    "supports_drop_empty_think",
]

# The system prompts the original MiniMind's SFT data loader adds (dataset/lm_dataset.py, 2026).
ORIGINAL_SYSTEM_PROMPTS = (
    "你是一个知识丰富的AI，尽力为用户提供准确的信息。",
    "你是minimind，一个小巧但有用的语言模型。",
    "你是一个专业的AI助手，请提供有价值的回答。",
    "你是minimind，请尽力帮助用户解决问题。",
    "你是一个可靠的AI，请给出准确的回答。",
    "You are a helpful AI assistant.",
    "You are minimind, a lightweight intelligent assistant.",
    "You are a friendly chatbot. Please answer the user's questions carefully.",
    "You are a knowledgeable AI. Try your best to provide accurate information.",
    "You are minimind, a small but useful language model.",
)


def augmentation_problems(add_system_ratio: float, empty_think_ratio: float) -> list[str]:
    """Both ratios must be probabilities."""
    problems = []
    for name, value in (("add_system_ratio", add_system_ratio), ("empty_think_ratio", empty_think_ratio)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            problems.append(f"{name} must be a number in [0, 1], got {value!r}")
    return problems


def supports_drop_empty_think(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template honours ``drop_empty_think`` (MiniMind's does)."""
    probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    try:
        kept = tokenizer.apply_chat_template(probe, tokenize=False)
        dropped = tokenizer.apply_chat_template(probe, tokenize=False, drop_empty_think=True)
    except Exception:  # noqa: BLE001 - a template that cannot render the probe cannot honour it either
        return False
    return "<think>" in kept and "<think>" not in dropped


def augment_records(
    records: Any,
    *,
    kind: str,
    add_system_ratio: float = 0.0,
    empty_think_ratio: float = 1.0,
    seed: int = 0,
    tokenizer: Any = None,
    system_prompts: tuple[str, ...] = ORIGINAL_SYSTEM_PROMPTS,
) -> Any:
    """`records` (an ``sft`` or ``dpo`` `datasets.Dataset`) with the augmentation applied; unchanged when both
    options are off. `tokenizer` is checked to honour ``drop_empty_think`` when blocks are to be dropped."""
    if add_system_ratio == 0 and empty_think_ratio == 1:
        return records
    if kind == "dpo" and add_system_ratio:
        raise ValueError(
            "add_system_ratio: DPO pairs keep their prompt (the original adds system prompts in SFT only)"
        )
    if empty_think_ratio < 1 and tokenizer is not None and not supports_drop_empty_think(tokenizer):
        raise ValueError(
            f"empty_think_ratio {empty_think_ratio}: the chat template of "
            f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no drop_empty_think switch "
            "(MiniMind's template has it); set empty_think_ratio: 1.0 or use MiniMind's template"
        )
    draws = random.Random(seed)
    plan = []
    for _ in range(len(records)):
        system = draws.random() < add_system_ratio
        prompt = draws.randrange(len(system_prompts))
        drop = draws.random() >= empty_think_ratio
        plan.append((system, prompt, drop))

    column = "conversations" if kind == "sft" else "prompt"

    def apply(record: dict, index: int) -> dict:
        system, prompt, drop = plan[index]
        out = {}
        messages = record[column]
        if system and messages and messages[0].get("role") != "system" and not record.get("tools"):
            out[column] = [
                {**{k: None for k in messages[0]}, "role": "system", "content": system_prompts[prompt]}
            ] + list(messages)
        # always the same keys: Arrow stores the column as one struct type
        out["chat_template_kwargs"] = {**(record.get("chat_template_kwargs") or {}), "drop_empty_think": drop}
        return out

    logger.info(
        "augmentation of %d records: %d drawn for a system prompt (kept out where one is there, or tools), "
        "%d render without the empty think block",
        len(records),
        sum(p[0] for p in plan),
        sum(p[2] for p in plan),
    )
    return records.map(apply, with_indices=True, desc="augmenting (the original's recipe)")
