"""The generation engine: one worker thread owns the model and decodes all requests in one batch.

Requests are queued from any thread (or event loop). Between two decoding steps the worker admits waiting
requests (continuous batching). A prompt is prefilled on its own, ``prefill_chunk`` tokens per step, into a
private cache, so its cost is its own tokens (nothing is padded to the longest prompt) and the running
streams get a decoding step between two chunks of a long prompt. A prefilled request then joins the batch:
request ``i`` owns slot ``i`` of the decoder's KV cache, and a finished request's slot is refilled by the
last one, so the batch stays dense. Every request keeps its own position, sampling parameters and
``torch.Generator``. Nothing else touches the model, so concurrent requests cannot corrupt each other.

The forward itself is a *decoder* (:mod:`.slots` runs the model's own modules over a preallocated cache;
:mod:`.llama_backend` runs its GGUF export through llama.cpp): ``start_prefill`` / ``prefill`` /
``admit`` / ``admit_copy`` / ``decode`` / ``release`` / ``move`` / ``reset``. The ``n`` choices of one API
request share one prefill of their prompt (``admit_copy`` puts it into each of their slots).

Each request's output is streamed as events to a ``sink`` callback, called on the worker thread:
``str`` text deltas (never a partial UTF-8 character, ``stop`` strings already cut) and one final
:class:`Finish`. :meth:`Engine.stream` (asyncio) and :meth:`Engine.stream_sync` wrap that in iterators.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .sampling import SamplingParams, sample_token
from .slots import SlotDecoder
from .streaming import IncrementalDecoder, StopMatcher

logger = logging.getLogger(__name__)


@dataclass
class Finish:
    """Last event of a request. ``reason``: "stop", "length", "cancelled" or "error"."""

    reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


@dataclass
class TokenLogprob:
    """Sent before a token's text when the request asked for ``logprobs``: the token, its log-probability
    under the model (the raw distribution: before temperature, top-p, penalties or a grammar), and the
    ``top`` most likely tokens as (id, log-probability)."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


Event = str | TokenLogprob | Finish


# Prompt tokens prefilled in one forward when no request is decoding (nobody waits for it; larger forwards
# use the CPU better, up to about this size).
IDLE_PREFILL_TOKENS = 1024


# Prompt tokens whose KV cache the torch decoder keeps for later prompts with the same beginning (a chat's
# history, a shared system prompt): 48 MiB for minimind3 in bf16.
DEFAULT_PREFIX_CACHE_TOKENS = 4096


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

    def cancel(self) -> None:
        """Stop generating for this request (from the event loop's thread, without awaiting)."""
        if not self._finished:
            self._handle.cancel()
            self._finished = True

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
        constraint=None,
        group: object | None = None,
    ):
        self.id = next(self._ids)
        self.group = group  # requests of one group with the same prompt share its prefill (the n choices)
        self.constraint = constraint  # a constrained.Constraint: the grammar the reply must follow
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
        model: a causal LM the slot decoder runs (MiniMind, Qwen3, Qwen3-MoE, Qwen2, Llama); with
            ``decoder`` given, only its config and generation config are read.
        tokenizer: decodes the generated ids.
        max_batch_size: rows decoded together; further requests wait in the queue.
        max_queue: waiting requests beyond this are refused with :class:`EngineOverloaded`.
        context_length: the model's maximum sequence length (default ``config.max_position_embeddings``).
        prefill_chunk: prompt tokens prefilled between two decoding steps of the running batch.
        decoder: the forward to use (default: :class:`~.slots.SlotDecoder` on ``model``).
        prefix_cache_tokens: for the default decoder, prompt tokens whose KV cache is kept for later
            prompts that start the same way (default ``DEFAULT_PREFIX_CACHE_TOKENS``; 0: none).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_batch_size: int = 16,
        max_queue: int = 256,
        context_length: int | None = None,
        prefill_chunk: int = 64,
        decoder=None,
        prefix_cache_tokens: int | None = None,
    ):
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be at least 1, not {prefill_chunk}")
        if decoder is not None and prefix_cache_tokens is not None:
            raise ValueError("prefix_cache_tokens is for the default decoder; this one was given")
        self.model = model.eval() if decoder is None else model
        self.tokenizer = tokenizer
        # The worker decodes with its own copy: a fast tokenizer shared across threads can fail with
        # "Already borrowed" when one thread encodes (and toggles padding/truncation) while another decodes.
        self._decode_tokenizer = copy.deepcopy(tokenizer)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.context_length = context_length or int(getattr(model.config, "max_position_embeddings", 2048))
        self.prefill_chunk = prefill_chunk
        self.decoder = decoder or SlotDecoder(
            model,
            slots=max_batch_size,
            context_length=self.context_length,
            prefix_cache_tokens=DEFAULT_PREFIX_CACHE_TOKENS
            if prefix_cache_tokens is None
            else prefix_cache_tokens,
        )
        self.device = self.decoder.device
        self.eos_ids = self._eos_ids(model, tokenizer)
        self._queue: queue.Queue[_Sequence] = queue.Queue()
        self._waiting: collections.deque[_Sequence] = collections.deque()  # taken, not yet prefilled
        self._prefilling: list[tuple[_Sequence, object]] = []  # (request, decoder prefill state), FIFO
        # requests waiting for a prefill of their group's prompt to finish, by that prefill's state
        self._followers: dict[object, list[_Sequence]] = {}
        self._active: list[_Sequence] = []  # request i decodes in slot i
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.steps = 0  # decoding steps run (for tests / stats)
        self.prefill_chunks = 0
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

    def stop(self) -> None:
        """Begin shutting down, without waiting: the worker ends after its current step, and every queued
        or running request finishes with reason "cancelled"."""
        self._closing.set()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- submitting ---------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        sink: Callable[[Event], None],
        constraint=None,
        group: object | None = None,
    ) -> RequestHandle:
        """Queue a request; events go to ``sink`` (called on the worker thread, must not block). With a
        ``constraint`` (:class:`~.constrained.Constraint`), only tokens its grammar accepts are sampled and
        the reply ends when the grammar is complete. Requests given the same ``group`` object (the ``n``
        choices of one API request) and the same prompt are prefilled once."""
        if not prompt_ids:
            raise ValueError("empty prompt")
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"prompt has {len(prompt_ids)} tokens; the context is {self.context_length}")
        if self._queue.qsize() >= self.max_queue:
            raise EngineOverloaded(f"{self._queue.qsize()} requests are already waiting")
        if self._thread is None:
            self.start()
        seq = _Sequence(list(prompt_ids), params, sink, self._decode_tokenizer, constraint, group)
        self._queue.put(seq)
        return RequestHandle(seq)

    def stream(
        self, prompt_ids: Sequence[int], params: SamplingParams, constraint=None, group: object | None = None
    ) -> EventStream:
        """Queue a request now (raising :class:`EngineOverloaded` / ``ValueError`` at once) and return an
        async iterator over its events; ``aclose()`` or leaving it early cancels the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        return EventStream(events, self.submit(prompt_ids, params, sink, constraint, group))

    def stream_sync(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[Event]:
        """Blocking iterator over a request's events (terminal chat, web UI)."""
        events: queue.Queue[Event] = queue.Queue()
        handle = self.submit(prompt_ids, params, events.put)
        try:
            while True:
                event = events.get()
                if isinstance(event, TokenLogprob):
                    continue
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

    def cancel_all(self) -> None:
        """Cancel every queued and running request (their streams end with finish reason "cancelled")."""
        for seq in self._snapshot():
            seq.cancelled = True

    def _snapshot(self) -> list[_Sequence]:
        with self._queue.mutex:
            queued = list(self._queue.queue)
        current = [seq for seq, _ in self._prefilling]
        following = [seq for group in self._followers.values() for seq in group]
        return queued + list(self._waiting) + current + following + list(self._active)

    # -- worker -------------------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while not self._closing.is_set():
                try:
                    idle = not (self._active or self._waiting or self._prefilling)
                    self._take_new(block=idle)
                    if self._waiting or self._prefilling:
                        self._prefill_step()
                    if self._active:
                        self._decode_step()
                except Exception as exc:  # keep serving: fail the work in flight, reset the state
                    logger.exception("generation failed")
                    following = [seq for group in self._followers.values() for seq in group]
                    for seq in list(self._active) + [seq for seq, _ in self._prefilling] + following:
                        seq.finish("error", error=f"{type(exc).__name__}: {exc}")
                    self._active, self._prefilling, self._followers = [], [], {}
                    self.decoder.reset()
        for seq in self._snapshot():
            seq.finish("cancelled")
        self._active, self._prefilling, self._followers = [], [], {}
        self._waiting.clear()
        while not self._queue.empty():
            self._queue.get_nowait()

    def _take_new(self, block: bool) -> None:
        """Move queued requests into ``_waiting`` while the batch has room for them."""

        def room() -> int:
            following = sum(len(group) for group in self._followers.values())
            taken = len(self._active) + len(self._waiting) + len(self._prefilling) + following
            return self.max_batch_size - taken

        if block and room() > 0:
            try:
                self._waiting.append(self._queue.get(timeout=0.05))
            except queue.Empty:
                return
        while room() > 0:
            try:
                self._waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break

    def _prefill_step(self) -> None:
        """Prefill the next prompt tokens, oldest request first, packed into one forward: ``prefill_chunk``
        tokens while others decode (they wait for it), up to ``IDLE_PREFILL_TOKENS`` when none do. Requests
        whose prompt is done join the batch and get their first token."""
        for seq, state in [item for item in self._prefilling if item[0].cancelled]:
            self.decoder.discard(state)
            self._prefilling.remove((seq, state))
            seq.finish("cancelled")
            # its followers prefill on their own, first in line
            self._waiting.extendleft(reversed(self._followers.pop(state, [])))
        budget = self.prefill_chunk if self._active else max(self.prefill_chunk, IDLE_PREFILL_TOKENS)
        work, scheduled = [], 0
        while budget > 0:
            if scheduled == len(self._prefilling):
                if not self._waiting:
                    break
                seq = self._waiting.popleft()
                if seq.cancelled:
                    seq.finish("cancelled")
                    continue
                leader = self._prefill_to_share(seq)
                if leader is not None:
                    self._followers.setdefault(leader, []).append(seq)
                    continue
                self._prefilling.append((seq, self.decoder.start_prefill(seq.prompt_ids)))
            seq, state = self._prefilling[scheduled]
            chunk = seq.prompt_ids[state.done : state.done + budget]
            work.append((seq, state, chunk))
            budget -= len(chunk)
            scheduled += 1
        if not work:
            return
        logits = self.decoder.prefill([(state, chunk) for _, state, chunk in work])
        self.prefill_chunks += 1
        done = [i for i, (seq, state, _) in enumerate(work) if state.done == len(seq.prompt_ids)]
        rows, row_logits = [], []
        for i in done:
            seq, state, _ = work[i]
            self._prefilling.remove((seq, state))
            self.decoder.admit(state, len(self._active))
            self._active.append(seq)
            rows.append(seq)
            row_logits.append(i)
            for follower in self._followers.pop(state, []):
                if follower.cancelled:
                    follower.finish("cancelled")
                    continue
                self.decoder.admit_copy(state, len(self._active))
                self._active.append(follower)
                rows.append(follower)
                row_logits.append(i)
        if rows:
            self._advance(rows, logits[row_logits])

    def _prefill_to_share(self, seq: _Sequence):
        """The state of a running prefill of ``seq``'s group with ``seq``'s prompt, if there is one."""
        if seq.group is None:
            return None
        for other, state in self._prefilling:
            if other.group is seq.group and other.prompt_ids == seq.prompt_ids:
                return state
        return None

    def _decode_step(self) -> None:
        rows = self._active
        last = torch.tensor([seq.generated[-1] for seq in rows], device=self.device)
        positions = torch.tensor([seq.length - 1 for seq in rows], device=self.device)
        logits = self.decoder.decode(last, positions)
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, len(rows))
        self._advance(rows, logits)

    def _advance(self, rows: list[_Sequence], logits: torch.Tensor) -> None:
        """Sample one token per row, stream its text, then drop finished rows from the batch."""
        for row, seq in enumerate(rows):
            if seq.cancelled:
                seq.finish("cancelled")
                continue
            row_logits = logits[row] if seq.constraint is None else seq.constraint.mask(logits[row])
            token = sample_token(row_logits, seq.params, seq.generator, seq.generated)
            seq.generated.append(token)
            if token in self.eos_ids and not seq.params.ignore_eos:
                self._emit(seq, seq.decoder.flush(), final=True)
                seq.finish("stop")
                continue
            if seq.params.logprobs is not None:  # the tokens of the reply (not the end-of-sequence one)
                seq.send(self._logprob(logits[row], token, seq.params.logprobs))
            if seq.constraint is not None:
                try:
                    seq.constraint.consume(token)
                except ValueError as exc:  # a grammar failure ends this request only
                    seq.finish("error", error=str(exc))
                    continue
            if self._emit(seq, seq.decoder.push(token)):
                seq.finish("stop")
            elif seq.constraint is not None and seq.constraint.finished:
                self._emit(seq, seq.decoder.flush(), final=True)
                seq.finish("stop")
            elif len(seq.generated) >= seq.params.max_new_tokens or seq.length >= self.context_length:
                self._emit(seq, seq.decoder.flush(), final=True)
                seq.finish("length")
        self._drop_finished()

    @staticmethod
    def _logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        best = torch.topk(logprobs, top) if top else None
        alternatives = list(zip(best.indices.tolist(), best.values.tolist(), strict=True)) if best else []
        return TokenLogprob(token, float(logprobs[token]), alternatives)

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
        """Free finished rows' slots; the last row moves into a freed slot, so rows stay 0..B-1."""
        active = self._active

        def pop_finished_tail() -> None:
            while active and active[-1].done:
                active.pop()
                self.decoder.release(len(active))

        pop_finished_tail()
        i = 0
        while i < len(active):
            if active[i].done:
                self.decoder.release(i)
                last = len(active) - 1  # not finished: the tail was popped
                self.decoder.move(last, i, active[last].length - 1)  # its cached columns
                active[i] = active.pop()
                pop_finished_tail()
            i += 1
