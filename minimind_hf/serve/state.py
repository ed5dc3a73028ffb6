"""What the HTTP API's routes share, built once per app: the engine, the served model names, the sampling
defaults, and the helpers around the tokenizer (the render thread, the grammar compiler, token texts)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from fastapi import Request

from .constrained import GrammarCompiler
from .engine import Engine
from .responses import TokenText


def _max_token_bytes(tokenizer) -> int:
    """An upper bound on the UTF-8 bytes one token stands for (byte-level symbols count 2 bytes: safe)."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # a tokenizer without a readable vocabulary: no early refusal
        return 0
    return max((len(piece.encode("utf-8")) for piece in vocab), default=0)


@dataclasses.dataclass
class ServerState:
    """The app's state (``app.state.server``); route handlers reach it through :func:`server_state`."""

    engine: Engine
    names: list[str]  # the served model names: the first, then aliases
    api_key: str | None
    default_temperature: float
    default_top_p: float
    created: int  # the models' "created" time: when the app was built
    context: int  # the engine's context length, in tokens
    token_bytes: int  # the most UTF-8 bytes one token stands for; 0: unknown
    vocab_size: int
    render_pool: ThreadPoolExecutor
    grammars: GrammarCompiler
    token_text: TokenText

    @classmethod
    def build(
        cls,
        engine: Engine,
        model_name: str,
        aliases: Sequence[str] = (),
        api_key: str | None = None,
        default_temperature: float = 1.0,
        default_top_p: float = 1.0,
    ) -> ServerState:
        vocab_size = int(getattr(engine.model.config, "vocab_size", 0) or len(engine.tokenizer))
        return cls(
            engine=engine,
            names=list(dict.fromkeys([model_name, *aliases])),
            api_key=api_key,
            default_temperature=default_temperature,
            default_top_p=default_top_p,
            created=int(time.time()),
            context=engine.context_length,
            token_bytes=_max_token_bytes(engine.tokenizer),
            vocab_size=vocab_size,
            # one thread renders and tokenises: the event loop stays free, and the tokenizer is used by one
            # thread
            render_pool=ThreadPoolExecutor(1, thread_name_prefix="minimind-render"),
            grammars=GrammarCompiler(engine.tokenizer, vocab_size),
            token_text=TokenText(engine.tokenizer),
        )

    def model_card(self, name: str) -> dict:
        return {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "minimind-hf",
            "max_model_len": self.context,
        }


def server_state(request: Request) -> ServerState:
    return request.app.state.server
