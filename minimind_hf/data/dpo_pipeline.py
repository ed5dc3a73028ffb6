"""DPO data: preference pairs -> the shared prompt's token ids + the chosen and rejected answers' token ids.

    ds = load_records("dpo", files)                 # validated prompt / chosen / rejected (/ tools) records
    ds = augment_records(ds, kind="dpo", ...)       # optional: chat_template_kwargs.drop_empty_think per pair
    pairs = tokenize_pairs(ds, tokenizer, max_length=1024, max_prompt_length=512)
    # columns prompt_ids, chosen_ids, rejected_ids; tokenised once (`datasets.map`, cached), not per batch

Each pair is rendered by `minimind_hf.data.rendering.render_pair`: the prompt once (chosen and rejected
continue the same prompt tokens), each answer ending at ``<|im_end|>``, as generated. Prompt and answers are
tokenised separately, without special tokens; the prompt is cut from the left to ``max_prompt_length``
tokens (the question nearest the answer is kept), each answer from the right to ``max_length`` minus the
prompt (at least one token, so no pair is ever without an answer token).

The DPO batch (chosen rows, then rejected rows, padded) is `minimind_hf.native.dpo.DPOCollator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .rendering import render_pair

__all__ = ["PAIR_COLUMNS", "encode_pairs", "tokenize_pairs"]

PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
_RECORD_COLUMNS = ("prompt", "chosen", "rejected")


def _render(tokenizer: Any, record: dict, open_thinking: bool) -> tuple[str, str, str]:
    """``(prompt_text, chosen_text, rejected_text)``; the per-pair augmentation draw rides on the record."""
    tools = record.get("tools")
    drop = bool((record.get("chat_template_kwargs") or {}).get("drop_empty_think"))
    prompt, chosen = render_pair(tokenizer, record["prompt"], record["chosen"], tools, open_thinking, drop)
    _, rejected = render_pair(tokenizer, record["prompt"], record["rejected"], tools, open_thinking, drop)
    return prompt, chosen, rejected


def encode_pairs(
    tokenizer: Any,
    records: Sequence[dict],
    max_length: int,
    max_prompt_length: int,
    open_thinking: bool = False,
    first_index: int = 0,
) -> dict[str, list[list[int]]]:
    """``dpo`` records -> columns ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` (truncated as the module
    says). A pair that cannot be rendered raises ValueError naming its row (``first_index`` + position)."""
    texts: list[str] = []
    for k, record in enumerate(records):
        try:
            texts += _render(tokenizer, record, open_thinking)
        except ValueError as err:
            raise ValueError(f"DPO pair at row {first_index + k}: {err}") from err
    # one call for the whole batch: a fast tokenizer encodes the texts in parallel, each to the same ids
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    out: dict[str, list[list[int]]] = {c: [] for c in PAIR_COLUMNS}
    for i in range(0, len(ids), 3):
        prompt = list(ids[i])[-max_prompt_length:]
        room = max(max_length - len(prompt), 1)
        out["prompt_ids"].append(prompt)
        out["chosen_ids"].append(list(ids[i + 1])[:room])
        out["rejected_ids"].append(list(ids[i + 2])[:room])
    return out


def tokenize_pairs(
    dataset: Any,
    tokenizer: Any,
    max_length: int,
    max_prompt_length: int,
    open_thinking: bool = False,
    num_proc: int | None = None,
) -> Any:
    """`datasets.map` ``dpo`` records (a `datasets.Dataset`) to the `PAIR_COLUMNS` rows, once, before
    training; the record columns are dropped."""
    missing = [c for c in _RECORD_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"tokenize_pairs needs dpo records (columns {', '.join(_RECORD_COLUMNS)}, as "
            f"load_records('dpo', ...) returns); missing {', '.join(missing)} in columns "
            f"{dataset.column_names}"
        )
    if not 0 < max_prompt_length < max_length:
        raise ValueError(f"need 0 < max_prompt_length < max_length, got {max_prompt_length}, {max_length}")

    def encode(batch: dict, indices: list[int]) -> dict:
        records = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        first = indices[0] if indices else 0
        return encode_pairs(tokenizer, records, max_length, max_prompt_length, open_thinking, first)

    if num_proc is not None and num_proc <= 1:
        num_proc = None
    return dataset.map(
        encode,
        batched=True,
        batch_size=256,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="tokenising pairs",
    )
