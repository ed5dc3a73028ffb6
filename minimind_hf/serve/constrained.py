"""Constrained decoding with llguidance: ``tool_choice`` "required" / a named function, and
``response_format`` json_object / json_schema.

A request's constraint is a Lark grammar compiled by llguidance against our vocabulary; before each
sampled token the engine masks every token the grammar cannot accept next (:meth:`Constraint.mask`), then
advances the grammar with the token drawn (:meth:`Constraint.consume`). When the grammar is complete the
request stops. The grammars:

- a tool call is the chat template's block,
  ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, whose JSON is held to the called tool's
  ``parameters`` schema; "required" allows any offered tool, one call or several, a named choice only that
  function;
- ``response_format`` is JSON (any object for json_object, the given schema for json_schema); with tools
  offered (``tool_choice`` "auto") the reply is that JSON or tool calls.

llguidance (a Rust library with no further dependencies) is part of the ``serve`` extra.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .parser import TOOL_CLOSE, TOOL_OPEN

logger = logging.getLogger(__name__)


class GrammarError(ValueError):
    """The grammar could not be built (a bad schema); the message says why."""


def _tag(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """A Lark terminal for ``text``: the token itself when it is one added token (llguidance matches added
    tokens by id, not by their bytes), else the quoted string."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1 and ids[0] in tokenizer.added_tokens_decoder:
        return f"<[{ids[0]}]>"
    return json.dumps(text)


# JSON exactly as json.dumps writes it (the chat template's tool-call format): no free whitespace, which a
# small model can otherwise fill until max_tokens.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _json_rule(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": JSON_LAYOUT}, ensure_ascii=False)


def tool_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of one call ``{"name": ..., "arguments": {...}}`` to any of ``tools``."""
    variants = []
    for tool in tools:
        function = tool["function"]
        arguments = function.get("parameters") or {"type": "object"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def build_grammar(
    tokenizer: PreTrainedTokenizerBase,
    *,
    call_tools: list[dict[str, Any]] | None = None,
    calls_required: bool = False,
    response_schema: dict[str, Any] | None = None,
) -> str:
    """The Lark grammar of a reply: tool calls to ``call_tools`` (required, or as the alternative to the JSON
    reply), and / or JSON matching ``response_schema``."""
    rules = []
    if call_tools:
        call = _json_rule(tool_call_schema(call_tools))
        rules.append('calls: call ("\\n" call)*')
        rules.append(f'call: {_tag(tokenizer, TOOL_OPEN)} "\\n" {call} "\\n" {_tag(tokenizer, TOOL_CLOSE)}')
    if response_schema is not None:
        rules.append(f"answer: {_json_rule(response_schema)}")
    if call_tools and calls_required:
        start = "calls"
    elif call_tools and response_schema is not None:
        start = "answer | calls"
    elif response_schema is not None:
        start = "answer"
    else:
        raise ValueError("nothing to constrain")
    return "\n".join([f"start: {start}", *rules]) + "\n"


class GrammarCompiler:
    """Compiles grammars for one tokenizer and a vocabulary of ``vocab_size`` logits (the model's, which may
    be larger than the tokenizer's). The llguidance tokenizer is built once, on first use."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._ll = None
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        try:
            import llguidance  # noqa: F401
        except ImportError:
            return False
        return True

    def _lltokenizer(self):
        with self._lock:
            if self._ll is None:
                import llguidance.hf

                self._ll = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
            return self._ll

    def compile(self, grammar: str) -> Constraint:
        import llguidance

        matcher = llguidance.LLMatcher(self._lltokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error().splitlines()[0])
        return Constraint(matcher, self.vocab_size)


class Constraint:
    """One request's grammar state (used by the engine's worker thread only)."""

    def __init__(self, matcher, vocab_size: int):
        self.matcher = matcher
        self.vocab_size = vocab_size
        self._words = torch.full(((vocab_size + 31) // 32,), -1, dtype=torch.int32)
        self._bits = torch.arange(32, dtype=torch.int32)

    def copy(self) -> Constraint:
        """A fresh state of the same grammar, for another choice of the request."""
        return Constraint(self.matcher.deep_copy(), self.vocab_size)

    def allowed(self) -> torch.Tensor:
        """Boolean (vocab,) of the tokens the grammar accepts next."""
        self.matcher.unsafe_compute_mask_ptr(self._words.data_ptr(), self._words.numel() * 4)
        return ((self._words[:, None] >> self._bits) & 1).flatten()[: self.vocab_size].bool()

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = self.allowed().to(logits.device)
        return logits.float().masked_fill(~allowed[: logits.shape[-1]], float("-inf"))

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise GrammarError(f"token {token} broke the grammar: {self.matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The grammar is complete: nothing but the end of the reply can follow."""
        return self.matcher.is_stopped()
