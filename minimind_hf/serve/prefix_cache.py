"""Prompts' KV caches kept after their prefill, so a later prompt that starts the same way skips those tokens.

Chat clients resend the whole conversation every turn, agents resend the same system prompt and tool list,
and evaluation harnesses send one few-shot header before every question: the prefix a new prompt shares
with a recent one was computed already. vLLM (automatic prefix caching) and llama.cpp's server (the slot's
previous prompt) reuse it; here :class:`PrefixCache` holds the per-layer keys and values of recently
prefilled prompts, up to ``max_tokens`` tokens in all (least recently used first out), and
:meth:`PrefixCache.longest` finds the entry sharing the longest prefix with a new prompt.

An entry is valid only for the weights it was computed with: the cache is emptied when any parameter of
the model is replaced or changed in place.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(eq=False)
class CachedPrompt:
    tokens: tuple[int, ...]
    keys: list[torch.Tensor]  # per layer (1, kv_heads, len(tokens), head_dim)
    values: list[torch.Tensor]


def _common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == tuple(b[:n]):
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == tuple(b[:mid]):
            lo = mid
        else:
            hi = mid
    return lo


class PrefixCache:
    """Recently prefilled prompts of one model (see the module docstring); ``max_tokens=0`` keeps none."""

    def __init__(self, model: nn.Module, max_tokens: int):
        if max_tokens < 0:
            raise ValueError(f"the prefix cache holds 0 or more tokens, not {max_tokens}")
        self.model = model
        self.max_tokens = max_tokens
        self._entries: collections.OrderedDict[tuple[int, ...], CachedPrompt] = collections.OrderedDict()
        self._tokens = 0
        self._weights = self._fingerprint()
        self.hits = 0  # prompts that reused a cached prefix (for tests / stats)
        self.reused_tokens = 0

    def _fingerprint(self) -> tuple:
        return tuple((id(p), p._version) for p in self.model.parameters() if not p.is_inference())

    def _check_weights(self) -> None:
        current = self._fingerprint()
        if current != self._weights:
            self.clear()
            self._weights = current

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, prompt: list[int]) -> tuple[CachedPrompt | None, int]:
        """The entry sharing the longest prefix with ``prompt``, and that prefix's length (0: none)."""
        if not self.max_tokens:
            return None, 0
        self._check_weights()
        best, best_len = None, 0
        for entry in self._entries.values():
            if entry.tokens[:1] != tuple(prompt[:1]):
                continue
            n = _common_prefix(entry.tokens, prompt)
            if n > best_len:
                best, best_len = entry, n
        if best is not None:
            self._entries.move_to_end(best.tokens)
            self.hits += 1
            self.reused_tokens += best_len
        return best, best_len

    def add(self, tokens: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Keep a prefilled prompt's cache (the tensors are kept, not copied: they must not change)."""
        if not self.max_tokens or len(tokens) > self.max_tokens:
            return
        self._check_weights()
        key = tuple(tokens)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = CachedPrompt(key, keys, values)
        self._tokens += len(key)
        while self._tokens > self.max_tokens:
            _, evicted = self._entries.popitem(last=False)
            self._tokens -= len(evicted.tokens)
