"""The engine's forward through llama.cpp (``serve --backend llama.cpp``), on the model's own GGUF export.

Only the forward moves: prompts are still rendered and tokenised by the Hugging Face tokenizer, and the
engine still schedules, samples (per-request seeds, penalties, top-p), detokenises and parses. llama.cpp's
f16 matrix-vector kernels read half the bytes of torch's fp32 ones and run about 3x faster per token on
one core here, and its batched decode (one sequence id per running request) lets the engine keep its
continuous batching (``benchmarks/serve_throughput.py`` has the figures).

Each request owns a llama.cpp sequence id from the moment its prefill starts until it finishes; the
engine's slots map to those ids, so admitting and compacting the batch move no cache at all. The KV cache
is allocated up front: ``slots * context_length`` cells, shared by the sequences.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

# llama.cpp logs every tensor of every context it creates to stderr; the engine logs what matters.
_quiet_callback = None


def _quiet(L) -> None:
    global _quiet_callback
    if _quiet_callback is None:
        _quiet_callback = L.llama_log_callback(lambda level, text, user_data: None)
        L.llama_log_set(_quiet_callback, ctypes.c_void_p(0))


@dataclass(eq=False)
class LlamaPrefillState:
    seq: int  # the llama.cpp sequence id this request keeps
    done: int = 0


class LlamaCppDecoder:
    """The decoder interface of :class:`~.engine.Engine` (see :mod:`.slots`) on a GGUF file.

    Args:
        gguf: the model file (our ``to_gguf`` export of the served folder).
        slots: requests decoded together (the engine's ``max_batch_size``).
        context_length: tokens one sequence may hold; the KV cache is ``slots * context_length`` cells.
        threads: llama.cpp threads for decoding and prefill.
        max_tokens_per_call: tokens in one ``llama_decode`` (longer prefills are split).
    """

    device = torch.device("cpu")

    def __init__(
        self, gguf: str | Path, slots: int, context_length: int, threads: int, max_tokens_per_call: int = 1024
    ):
        try:
            import llama_cpp as L
        except ImportError as exc:
            raise ImportError(
                "--backend llama.cpp needs llama-cpp-python: pip install 'llama-cpp-python>=0.3.36'"
            ) from exc
        self.L = L
        _quiet(L)
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(str(gguf).encode(), L.llama_model_default_params())
        if not self.model:
            raise ValueError(f"{gguf}: llama.cpp could not load this GGUF file")
        params = L.llama_context_default_params()
        params.n_seq_max = slots
        params.n_ctx = slots * context_length
        # One KV buffer shared by all sequences. Per-sequence streams (kv_unified=False) made a batched
        # step of 8 rows 1.6x slower here (125 vs 194 tok/s, minimind3, one thread).
        params.kv_unified = True
        params.n_batch = params.n_ubatch = max(max_tokens_per_call, slots)
        params.n_threads = params.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {params.n_ctx} tokens")
        self.memory = L.llama_get_memory(self.ctx)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.max_tokens_per_call = params.n_batch
        self.batch = L.llama_batch_init(self.max_tokens_per_call, 0, 1)
        self.slots = slots
        self.context_length = context_length
        self.free_seqs = list(range(slots))
        self.slot_seq: list[int] = [-1] * slots
        logger.info(
            "llama.cpp backend: %s, %d slots x %d tokens of KV cache, %d threads",
            Path(gguf).name,
            slots,
            context_length,
            threads,
        )

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.L.llama_model_free(self.model)
            self.ctx = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    # -- one llama_decode ---------------------------------------------------------------------------
    def _run(self, entries: list[tuple[int, int, int, bool]]) -> list[int]:
        """entries: (token, position, sequence, wants_logits); returns the batch rows that have logits."""
        b = self.batch
        b.n_tokens = len(entries)
        rows = []
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
            if logits:
                rows.append(i)
        status = self.L.llama_decode(self.ctx, b)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} (1: no room left in the KV cache)")
        return rows

    def _logits(self, rows: list[int]) -> torch.Tensor:
        out = np.empty((len(rows), self.n_vocab), dtype=np.float32)
        for j, i in enumerate(rows):
            ptr = self.L.llama_get_logits_ith(self.ctx, i)
            out[j] = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (self.n_vocab,))
        return torch.from_numpy(out)

    # -- the decoder interface ----------------------------------------------------------------------
    def start_prefill(self, prompt: list[int]) -> LlamaPrefillState:
        return LlamaPrefillState(seq=self.free_seqs.pop())

    def prefill(self, work: list[tuple[LlamaPrefillState, list[int]]]) -> torch.Tensor:
        logits, pending = [], []
        for state, chunk in work:
            entries = [(t, state.done + j, state.seq, j == len(chunk) - 1) for j, t in enumerate(chunk)]
            for start in range(0, len(entries), self.max_tokens_per_call):  # split what does not fit
                part = entries[start : start + self.max_tokens_per_call]
                if len(pending) + len(part) > self.max_tokens_per_call:
                    logits.append(self._logits(self._run(pending)))
                    pending = []
                pending.extend(part)
            state.done += len(chunk)
        logits.append(self._logits(self._run(pending)))
        return torch.cat(logits)

    def admit(self, state: LlamaPrefillState, slot: int) -> None:
        self.slot_seq[slot] = state.seq

    def admit_copy(self, state: LlamaPrefillState, slot: int) -> None:
        """A shared prompt: another sequence id gets the prefilled cells (in the unified KV cache they are
        shared, not copied, until the sequences diverge)."""
        seq = self.free_seqs.pop()
        self.L.llama_memory_seq_cp(self.memory, state.seq, seq, -1, -1)
        self.slot_seq[slot] = seq

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        entries = [
            (int(t), int(p), self.slot_seq[i], True)
            for i, (t, p) in enumerate(zip(tokens.tolist(), positions.tolist(), strict=True))
        ]
        return self._logits(self._run(entries))

    def release(self, slot: int) -> None:
        seq = self.slot_seq[slot]
        self.L.llama_memory_seq_rm(self.memory, seq, -1, -1)
        self.free_seqs.append(seq)
        self.slot_seq[slot] = -1

    def move(self, src: int, dst: int, length: int) -> None:
        self.slot_seq[dst] = self.slot_seq[src]
        self.slot_seq[src] = -1

    def discard(self, state: LlamaPrefillState) -> None:
        self.L.llama_memory_seq_rm(self.memory, state.seq, -1, -1)
        self.free_seqs.append(state.seq)

    def reset(self) -> None:
        self.L.llama_memory_clear(self.memory, True)
        self.free_seqs = list(range(self.slots))
        self.slot_seq = [-1] * self.slots
