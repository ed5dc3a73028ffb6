"""The generation engine: one worker thread owns the model and decodes all requests in one batch.

Requests are queued from any thread (or event loop). Between two decoding steps the worker admits
waiting requests (continuous batching): their prompts are prefilled together, left-padded, into a fresh
KV cache, which is then left-padded and concatenated onto the running batch's cache. Every row keeps its
own position counter, so padding never shifts RoPE positions, and its own sampling parameters and
``torch.Generator``. Finished rows are dropped from the batch and the all-padding columns on the left are
trimmed. Nothing else touches the model, so concurrent requests cannot corrupt each other's state.

Each request's output is streamed as events to a ``sink`` callback, called on the worker thread:
``str`` text deltas (never a partial UTF-8 character, ``stop`` strings already cut) and one final
:class:`Finish`. :meth:`Engine.stream` (asyncio) and :meth:`Engine.stream_sync` wrap that in iterators.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache

from .sampling import SamplingParams, sample_token
from .streaming import IncrementalDecoder, StopMatcher

logger = logging.getLogger(__name__)


@dataclass
class Finish:
    """Last event of a request. ``reason``: "stop", "length", "cancelled" or "error"."""

    reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


Event = str | Finish


class EngineOverloaded(RuntimeError):
    """Too many requests are waiting; try again later."""


class RequestHandle:
    def __init__(self, seq: _Sequence):
        self._seq = seq

    def cancel(self) -> None:
        self._seq.cancelled = True


class EventStream:
    """Async iterator over one request's events (see :meth:`Engine.stream`)."""

    def __init__(self, events: asyncio.Queue, handle: RequestHandle):
        self._events = events
        self._handle = handle
        self._finished = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        try:
            event = await self._events.get()
        except BaseException:  # cancelled while waiting (client gone): stop generating for it
            self._handle.cancel()
            raise
        if isinstance(event, Finish):
            self._finished = True
        return event

    async def aclose(self) -> None:
        if not self._finished:
            self._handle.cancel()
            self._finished = True


class _Sequence:
    """One request inside the engine (touched only by the worker thread, except ``cancelled``)."""

    _ids = itertools.count()

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        sink: Callable[[Event], None],
        tokenizer: PreTrainedTokenizerBase,
    ):
        self.id = next(self._ids)
        self.prompt_ids = prompt_ids
        self.params = params
        self.sink = sink
        self.generator = params.make_generator()
        self.decoder = IncrementalDecoder(tokenizer)
        self.stopper = StopMatcher(params.stop)
        self.generated: list[int] = []
        self.cancelled = False
        self.done = False

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.generated)

    def send(self, event: Event) -> None:
        try:
            self.sink(event)
        except Exception:  # a consumer that went away must not kill the worker
            logger.debug("sink of request %d failed", self.id, exc_info=True)
            self.cancelled = True

    def finish(self, reason: str, error: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        self.send(Finish(reason, len(self.prompt_ids), len(self.generated), error))


class Engine:
    """Owns ``model`` on a worker thread and serves generation requests in dynamic batches.

    Args:
        model: a causal LM whose forward takes ``input_ids, attention_mask, position_ids, cache`` and
            uses a ``DynamicCache`` (any transformers 5 decoder-only model without sliding windows).
        tokenizer: decodes the generated ids.
        max_batch_size: rows decoded together; further requests wait in the queue.
        max_queue: waiting requests beyond this are refused with :class:`EngineOverloaded`.
        context_length: the model's maximum sequence length (default ``config.max_position_embeddings``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_batch_size: int = 16,
        max_queue: int = 256,
        context_length: int | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        # The worker decodes with its own copy: a fast tokenizer shared across threads can fail with
        # "Already borrowed" when one thread encodes (and toggles padding/truncation) while another decodes.
        self._decode_tokenizer = copy.deepcopy(tokenizer)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.context_length = context_length or int(getattr(model.config, "max_position_embeddings", 2048))
        self.device = next(model.parameters()).device
        self.eos_ids = self._eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._queue: queue.Queue[_Sequence] = queue.Queue()
        self._active: list[_Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (B, T) 1 = real token in the cache
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.steps = 0  # decoding steps run (for tests / stats)
        self.max_rows_seen = 0

    @staticmethod
    def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
        ids: set[int] = set()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for value in (gen_eos, tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._thread is None or not self._thread.is_alive():
            self._closing.clear()
            self._thread = threading.Thread(target=self._run, name="minimind-engine", daemon=True)
            self._thread.start()
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- submitting ---------------------------------------------------------------------------------
    def submit(
        self, prompt_ids: Sequence[int], params: SamplingParams, sink: Callable[[Event], None]
    ) -> RequestHandle:
        """Queue a request; events go to ``sink`` (called on the worker thread, must not block)."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"prompt has {len(prompt_ids)} tokens; the context is {self.context_length}")
        if self._queue.qsize() >= self.max_queue:
            raise EngineOverloaded(f"{self._queue.qsize()} requests are already waiting")
        if self._thread is None:
            self.start()
        seq = _Sequence(list(prompt_ids), params, sink, self._decode_tokenizer)
        self._queue.put(seq)
        return RequestHandle(seq)

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams) -> EventStream:
        """Queue a request now (raising :class:`EngineOverloaded` / ``ValueError`` at once) and return an
        async iterator over its events; ``aclose()`` or leaving it early cancels the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        return EventStream(events, self.submit(prompt_ids, params, sink))

    def stream_sync(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[Event]:
        """Blocking iterator over a request's events (terminal chat, web UI)."""
        events: queue.Queue[Event] = queue.Queue()
        handle = self.submit(prompt_ids, params, events.put)
        try:
            while True:
                event = events.get()
                yield event
                if isinstance(event, Finish):
                    return
        finally:
            handle.cancel()

    def generate_text(self, prompt_ids: Sequence[int], params: SamplingParams) -> tuple[str, Finish]:
        """Whole completion at once (blocking)."""
        parts: list[str] = []
        for event in self.stream_sync(prompt_ids, params):
            if isinstance(event, Finish):
                return "".join(parts), event
            parts.append(event)
        raise RuntimeError("unreachable")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # -- worker -------------------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while not self._closing.is_set():
                try:
                    new = self._take_new(block=not self._active)
                    if new:
                        self._prefill(new)
                    if self._active:
                        self._decode_step()
                except Exception as exc:  # keep serving: fail the batch in flight, reset the state
                    logger.exception("generation failed")
                    for seq in self._active:
                        seq.finish("error", error=f"{type(exc).__name__}: {exc}")
                    self._active, self._cache, self._mask = [], None, None
        for seq in self._active:
            seq.finish("cancelled")
        while not self._queue.empty():
            self._queue.get_nowait().finish("cancelled")

    def _take_new(self, block: bool) -> list[_Sequence]:
        new: list[_Sequence] = []
        room = self.max_batch_size - len(self._active)
        if block:
            try:
                new.append(self._queue.get(timeout=0.05))
            except queue.Empty:
                return new
        while len(new) < room:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        kept = []
        for seq in new:
            if seq.cancelled:
                seq.finish("cancelled")
            else:
                kept.append(seq)
        return kept

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :]

    def _prefill(self, new: list[_Sequence]) -> None:
        width = max(len(s.prompt_ids) for s in new)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for row, seq in enumerate(new):
            ids[row, width - len(seq.prompt_ids) :] = torch.tensor(seq.prompt_ids)
            mask[row, width - len(seq.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        logits = self._forward(ids, mask, positions, cache)
        self._merge(new, cache, mask)
        self._advance(new, logits)

    def _merge(self, new: list[_Sequence], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append the new rows (their cache and mask) to the running batch, left-padding the shorter."""
        if self._cache is None or not self._active:
            self._active, self._cache, self._mask = list(new), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def pad(t: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            missing = width - t.shape[-dim_from_end]
            if missing == 0:
                return t
            spec = [0, 0] * (dim_from_end - 1) + [missing, 0]
            return F.pad(t, spec)

        for old_layer, new_layer in zip(self._layers(self._cache), self._layers(cache), strict=True):
            old_layer.keys = torch.cat([pad(old_layer.keys, 2), pad(new_layer.keys, 2)], dim=0)
            old_layer.values = torch.cat([pad(old_layer.values, 2), pad(new_layer.values, 2)], dim=0)
        self._mask = torch.cat([pad(self._mask, 1), pad(mask, 1)], dim=0)
        self._active.extend(new)

    @staticmethod
    def _layers(cache: DynamicCache) -> list:
        layers = cache.layers
        for layer in layers:
            if type(layer).__name__ != "DynamicLayer":
                raise NotImplementedError(
                    f"the engine batches plain DynamicLayer caches, not {type(layer).__name__}"
                )
        return layers

    def _decode_step(self) -> None:
        rows = self._active
        last = torch.tensor([[seq.generated[-1]] for seq in rows], device=self.device)
        positions = torch.tensor([[seq.length - 1] for seq in rows], device=self.device)
        mask = torch.cat(
            [self._mask, torch.ones((len(rows), 1), dtype=self._mask.dtype, device=self.device)], 1
        )
        logits = self._forward(last, mask, positions, self._cache)
        self._mask = mask
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, len(rows))
        self._advance(rows, logits)

    def _advance(self, rows: list[_Sequence], logits: torch.Tensor) -> None:
        """Sample one token per row, stream its text, then drop finished rows from the batch."""
        for row, seq in enumerate(rows):
            if seq.cancelled:
                seq.finish("cancelled")
                continue
            token = sample_token(logits[row], seq.params, seq.generator, seq.generated)
            seq.generated.append(token)
            if token in self.eos_ids and not seq.params.ignore_eos:
                self._emit(seq, seq.decoder.flush(), final=True)
                seq.finish("stop")
                continue
            if self._emit(seq, seq.decoder.push(token)):
                seq.finish("stop")
            elif len(seq.generated) >= seq.params.max_new_tokens or seq.length >= self.context_length:
                self._emit(seq, seq.decoder.flush(), final=True)
                seq.finish("length")
        self._drop_finished()

    @staticmethod
    def _emit(seq: _Sequence, text: str, final: bool = False) -> bool:
        """Send text through the stop matcher; True if a stop string ended the request."""
        out, hit = seq.stopper.feed(text) if text else ("", False)
        if final and not hit:
            out += seq.stopper.flush()
        if out:
            seq.send(out)
        return hit

    def _drop_finished(self) -> None:
        keep = [i for i, seq in enumerate(self._active) if not seq.done]
        if len(keep) == len(self._active):
            return
        if not keep:
            self._active, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        mask = self._mask.index_select(0, index)
        first = int((mask.sum(0) > 0).nonzero()[0])  # columns left of this are padding in every row
        for layer in self._layers(self._cache):
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        self._mask = mask[:, first:]
        self._active = [self._active[i] for i in keep]
