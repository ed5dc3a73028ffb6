"""Shared pieces of the preference / RL trainers (DPO, GRPO, PPO): rendering, padding, log-probs.

Sampling lives in `minimind_hf.native.rollout` (the one rollout engine).

Memory rules (the original's GRPO ran out of memory, minimind #758/#845):

- log-probs are computed with ``logits_to_keep`` (only completion positions reach the LM head) and in row
  chunks; each chunk's ``(b, K, V)`` logits are reduced to ``(b, K)`` at once and never kept;
- sampling (`rollout`) runs ``generation_chunk`` rows at a time.

Positions: prompts are left-padded, so ``position_ids = cumsum(attention_mask) - 1`` -- the same positions
``generate`` uses -- are passed to every forward pass, so scored log-probs match the sampled ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "pad",
    "per_token_logps",
    "position_ids_from_mask",
]


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, both ``(B, max_len)`` long tensors; ``side`` is "left" (prompts) or "right"."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``cumsum(mask) - 1`` with padding positions set to 0, as ``generate`` computes them. (B, T)"""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., index]`` without materialising the log-softmax: ``logit - logsumexp``.

    logits (B, K, V), index (B, K) -> (B, K), computed in float32."""
    logits = logits.float()
    picked = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)  # (B, K)
    return picked - torch.logsumexp(logits, dim=-1)  # (B, K)


def per_token_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    chunk_rows: int | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probabilities of the last ``logits_to_keep`` tokens of each row under ``model``.

    input_ids, attention_mask: (B, T) with the completion in the last K = ``logits_to_keep`` columns.
    Returns (B, K) float32. Logits are divided by ``temperature`` (use the
    sampling temperature so ratios refer to the sampling distribution). Gradients flow when enabled."""
    K = logits_to_keep
    rows = chunk_rows or input_ids.size(0)
    logps = []
    for start in range(0, input_ids.size(0), rows):
        ids = input_ids[start : start + rows]  # (b, T)
        mask = attention_mask[start : start + rows]  # (b, T)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            logits_to_keep=K + 1,
            use_cache=False,
        )
        logits = out.logits[:, :-1, :]  # (b, K, V): position t predicts token t + 1
        if temperature != 1.0:
            logits = logits / temperature
        logps.append(selective_log_softmax(logits, ids[:, -K:]))  # (b, K)
        del out, logits
    return torch.cat(logps, dim=0)


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_token_id: int | Sequence[int]) -> torch.Tensor:
    """1 up to and including the first eos of each row, 0 after it. (B, K) -> (B, K) long."""
    eos_ids = torch.as_tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=completion_ids.device
    )
    is_eos = torch.isin(completion_ids, eos_ids)  # (B, K)
    # number of eos strictly before position t; keep t while it is 0
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (eos_before == 0).long()


def sampling_problems(temperature: float, top_p: float) -> list[str]:
    """RL samples its rollouts and trains on their log-probs at `temperature`: 0 or less would divide the
    logits by zero or flip their sign (a NaN loss, or training on the wrong distribution), so both are
    refused."""
    p = []
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        p.append(
            f"temperature must be > 0 for RL sampling, got {temperature!r} "
            "(for near-greedy rollouts use e.g. 0.1)"
        )
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        p.append(f"top_p must be in (0, 1], got {top_p!r}")
    return p


def thinking_problems(open_thinking: bool, thinking_ratio: float | None) -> list[str]:
    """`thinking_ratio` is a probability, and replaces `open_thinking` (setting both says two things)."""
    if thinking_ratio is None:
        return []
    if isinstance(thinking_ratio, bool) or not isinstance(thinking_ratio, (int, float)):
        return [f"thinking_ratio must be a number in [0, 1], got {thinking_ratio!r}"]
    if not 0 <= thinking_ratio <= 1:
        return [
            "thinking_ratio must be in [0, 1] (the share of prompts that open the think block), "
            f"got {thinking_ratio}"
        ]
    if open_thinking:
        return [
            "open_thinking: true and thinking_ratio both set: thinking_ratio decides per prompt; drop "
            "open_thinking (or thinking_ratio: 1.0 opens every prompt)"
        ]
    return []


def load_rl_prompts(cfg) -> tuple:
    """Train and eval prompt records of an RL stage (GRPO, PPO): `cfg.data` (capped at `cfg.max_prompts`),
    and `cfg.eval_data` or an `eval_ratio` split of it."""
    from .common import load_train_and_eval

    records, eval_records = load_train_and_eval("rl", cfg, cfg.max_prompts)
    check_ground_truth(records, getattr(cfg, "rewards", ()), "data")
    if cfg.eval_data:
        check_ground_truth(eval_records, getattr(cfg, "rewards", ()), "eval_data")
    return records, eval_records


# rewards that score against a record's `gt`: a prompt without one always scores 0 and teaches nothing
GROUND_TRUTH_REWARDS = ("accuracy", "gt_coverage")


def check_ground_truth(records: Any, rewards: Sequence[str], key: str) -> None:
    """Refuse prompts without ground truth when a reward needs it (a run on them would train on zero reward
    and exit 0); name the first such row and the count."""
    needs = [r for r in rewards if r in GROUND_TRUTH_REWARDS]
    if not needs:
        return
    missing = [
        i for i, truth in enumerate(records["ground_truth"]) if truth is None or not str(truth).strip()
    ]
    if missing:
        raise ValueError(
            f"{key}: {len(missing)} of {len(records)} prompts have no ground truth ('gt'), e.g. row "
            f"{missing[0]}, but the {' and '.join(needs)} reward{'s need' if len(needs) > 1 else ' needs'} "
            "one: add 'gt' to every record, or choose rewards that need none"
        )
