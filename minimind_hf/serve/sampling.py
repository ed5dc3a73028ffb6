"""Per-request sampling: penalties, temperature, top-k, top-p, and a private ``torch.Generator``.

``transformers`` ``generate()`` draws from the global RNG, so two requests sampled in one batch would
consume each other's random numbers. Here every request owns a generator seeded from its ``seed`` (or
from fresh entropy), so a seeded request gives the same tokens whatever else runs beside it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    """What one request asks of the decoder. ``temperature == 0`` means greedy."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # report each token's log-probability and this many alternatives (None: off)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1

    def make_generator(self) -> torch.Generator:
        seed = self.seed if self.seed is not None else random.SystemRandom().randrange(2**63)
        return torch.Generator().manual_seed(seed % 2**64)


def apply_penalties(logits: torch.Tensor, generated: list[int], params: SamplingParams) -> torch.Tensor:
    """OpenAI's presence / frequency penalties over the tokens generated so far (``logits``: (V,))."""
    if not generated or (params.presence_penalty == 0.0 and params.frequency_penalty == 0.0):
        return logits
    counts = torch.bincount(torch.tensor(generated), minlength=logits.shape[-1])[: logits.shape[-1]]
    counts = counts.to(logits)
    return logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0).to(logits)


def sample_token(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
    generated: list[int] | None = None,
) -> int:
    """Choose the next token from one row of logits (V,)."""
    logits = apply_penalties(logits.float(), generated or [], params)
    if params.greedy:
        return int(logits.argmax())
    logits = logits / params.temperature
    vocab = logits.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens strictly more likely already cover top_p (the first always stays)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))
