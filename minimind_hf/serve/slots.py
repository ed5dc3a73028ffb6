"""A lean forward for serving: Qwen3-shaped decoders over a slot-indexed, preallocated KV cache.

``model(...)`` with a ``DynamicCache`` costs, per generated token, a framework pass (mask building, output
recording, kwargs plumbing) and a ``torch.cat`` of every layer's whole cache (the cache is copied once per
token, so a long reply is quadratic in memory traffic). For a 64M model on one core that overhead was larger
than the matrix work. Here the cache is one tensor per layer, ``(slots, kv_heads, capacity, head_dim)``:
request ``i`` of the running batch owns slot ``i``, a decode step writes one column per row in place and
attends over a view of the first ``max(length)`` columns. The layers' own modules still compute everything
else (norms, q/k norms, MLP or MoE block, rotary embedding, head), so the arithmetic is the model's.

:class:`SlotDecoder` works for the decoders whose attention block is the Qwen3 / Llama one (``q/k/v/o_proj``,
optional ``q_norm`` / ``k_norm``, RoPE from ``model.model.rotary_emb``): MiniMind (dense and MoE), Qwen3,
Qwen3-MoE, Qwen2 and Llama. Other architectures are refused by name.

Prompts are prefilled one request at a time, in chunks, into a private cache (no padding: the cost is the
prompt's own tokens), which :meth:`SlotDecoder.admit` then copies into the next free slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from .packed import Projection, feed_forward
from .prefix_cache import PrefixCache

SUPPORTED_MODEL_TYPES = ("minimind", "qwen3", "qwen3_moe", "qwen2", "llama")


def check_supported(model: PreTrainedModel) -> None:
    """Raise ``ValueError`` naming what stops ``model`` from running on the slot decoder."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"the serving engine runs {', '.join(SUPPORTED_MODEL_TYPES)} models; this one is {model_type!r}"
        )
    layer_types = getattr(config, "layer_types", None) or []
    windowed = [t for t in layer_types if t != "full_attention"]
    if windowed or (getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None)):
        raise ValueError("the serving engine does not implement sliding-window attention layers")
    base = getattr(model, "model", None)
    if base is None or not hasattr(base, "layers") or not hasattr(base, "rotary_emb"):
        raise ValueError(f"{type(model).__name__} has no model.layers / model.rotary_emb to decode with")


# Key columns a CPU decode step attends over are a multiple of this (see SlotDecoder.decode).
DECODE_WIDTH_BLOCK = 64


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the half-split layout every supported model uses (``rotate_half``)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` for the RMSNorm of every supported model (``weight * normalised(x in fp32)``, cast back
    before the weight), in three ops instead of eight: a decode step runs 2 per layer."""
    eps = getattr(norm, "variance_epsilon", None)
    if eps is None:
        return norm(x)
    return norm.weight * F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def _single_query_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention for one query per row (a decode step) as two batched matrix products, the query heads of
    each key/value head stacked as rows: q (B, H, 1, D), keys / values (B, KV, L, D), ``bias`` (B, 1, 1, L)
    0 where a key is seen and -inf where not (fp32, built once per step for all layers).

    On the CPU, ``scaled_dot_product_attention``'s flash kernel is made for many queries: for one it was
    2-4x slower than this in bf16 (0.73 vs 0.38 ms a layer at 8 rows x 70 keys, 7.2 vs 2.5 ms at 600).
    The scores are rounded to the cache's dtype and the softmax runs in fp32, as in transformers' eager
    attention."""
    batch, heads, _, dim = q.shape
    kv_heads = keys.shape[1]
    if keys.dtype != torch.float32:
        # torch's bf16 batched product is 2-4x slower on a transposed view of the cache (8 rows x 600
        # keys: 1.6 ms) than on a contiguous copy of it (0.4 ms, the copy included); fp32's is not.
        keys = keys.contiguous()
    grouped = (q * scale).view(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(grouped, keys.transpose(-1, -2)).float()  # (B, KV, H/KV, L)
    probs = torch.softmax(scores + bias, dim=-1).to(values.dtype)
    return torch.matmul(probs, values).view(batch, heads, 1, dim)


@dataclass(eq=False)  # compared by identity (the engine looks states up in a list)
class PrefillState:
    """One prompt's private cache while it is prefilled, chunk by chunk."""

    keys: list[torch.Tensor]  # per layer (1, kv_heads, prompt_len, head_dim)
    values: list[torch.Tensor]
    done: int = 0  # prompt tokens already in the cache
    tokens: list[int] | None = None  # the prompt (kept in the prefix cache once prefilled)


class SlotDecoder:
    """Runs ``model``'s forward for the engine (see the module docstring).

    Args:
        model: a supported causal LM (in eval mode; its dtype is the cache's dtype).
        slots: rows decoded together at most.
        context_length: the longest sequence a slot will hold.
        initial_capacity: columns allocated at first; the cache doubles as sequences grow.
        pack: fuse and prepack the weight matrices (:mod:`.packed`; False: call the model's linears).
        prefix_cache_tokens: prompt tokens whose KV cache is kept after their prefill, for later prompts
            that start the same way (:mod:`.prefix_cache`; 0: none).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        slots: int,
        context_length: int,
        initial_capacity: int = 256,
        pack: bool = True,
        prefix_cache_tokens: int = 0,
    ):
        check_supported(model)
        self.model = model
        config = model.config
        self.layers = list(model.model.layers)
        self.embed = model.get_input_embeddings()
        self.norm = model.model.norm
        self.rotary = model.model.rotary_emb
        self.head = Projection([model.get_output_embeddings()], pack)
        self.qkv = [
            Projection([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj], pack)
            for layer in self.layers
        ]
        self.out_proj = [Projection([layer.self_attn.o_proj], pack) for layer in self.layers]
        self.mlps = [feed_forward(layer.mlp, pack) for layer in self.layers]
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.slots = slots
        self.context_length = context_length
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        self.prefix_cache = PrefixCache(model, prefix_cache_tokens)
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._grow(min(initial_capacity, context_length))

    # -- cache management ---------------------------------------------------------------------------
    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = min(self.context_length, max(needed, 2 * self.capacity))
        shape = (self.slots, self.kv_heads, capacity, self.head_dim)
        keys, values = [], []
        for layer in range(len(self.layers)):
            k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.capacity:
                k[:, :, : self.capacity] = self.keys[layer]
                v[:, :, : self.capacity] = self.values[layer]
            keys.append(k)
            values.append(v)
        self.keys, self.values, self.capacity = keys, values, capacity

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy slot ``src``'s first ``length`` columns into slot ``dst`` (compacting the batch)."""
        for k, v in zip(self.keys, self.values, strict=True):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]

    def release(self, slot: int) -> None:
        """A slot's request finished. Nothing to free: a slot's columns past its length are never read."""

    def discard(self, state: PrefillState) -> None:
        """A prefill was abandoned (its request was cancelled); its private cache is garbage."""

    def reset(self) -> None:
        """Forget every request (after a failed step). The cache is simply overwritten by the next ones."""

    def admit_copy(self, state: PrefillState, slot: int) -> None:
        """Copy a finished prefill, admitted already, into another ``slot`` too (a shared prompt)."""
        self.admit(state, slot)

    def admit(self, state: PrefillState, slot: int) -> None:
        """Copy a finished prefill into ``slot`` (and keep it in the prefix cache)."""
        self._grow(state.done)
        for k, v, pk, pv in zip(self.keys, self.values, state.keys, state.values, strict=True):
            k[slot, :, : state.done] = pk[0]
            v[slot, :, : state.done] = pv[0]
        if state.tokens is not None:
            self.prefix_cache.add(state.tokens, state.keys, state.values)

    # -- forward ------------------------------------------------------------------------------------
    def _attention(self, index, hidden, cos, sin, store) -> torch.Tensor:
        """``hidden`` (B, T, hidden) -> layer ``index``'s attention output; ``store(k, v)`` returns the
        keys, values and mask to attend over (boolean; for a CPU decode step the additive one of
        :func:`_single_query_attention`)."""
        attn = self.layers[index].self_attn
        batch, width, _ = hidden.shape
        # q and k side by side as heads (B, T, H + KV, D): one q/k norm and one rotation for both
        qkv = self.qkv[index].fused(hidden).view(batch, width, self.heads + 2 * self.kv_heads, self.head_dim)
        qk, v = qkv[:, :, : self.heads + self.kv_heads], qkv[:, :, self.heads + self.kv_heads :]
        qk_weight = self._qk_norm_weight(attn)
        if qk_weight is not None:
            qk = qk_weight * F.rms_norm(qk.float(), (self.head_dim,), eps=attn.q_norm.variance_epsilon).to(
                qk.dtype
            )
        elif getattr(attn, "q_norm", None) is not None:  # norms of another shape: one at a time
            qk = torch.cat([attn.q_norm(qk[:, :, : self.heads]), attn.k_norm(qk[:, :, self.heads :])], dim=2)
        q, k = _rotate(qk.transpose(1, 2), cos, sin).split([self.heads, self.kv_heads], dim=1)
        keys, values, mask = store(k, v.transpose(1, 2))
        if mask.dtype != torch.bool:  # a CPU decode step
            out = _single_query_attention(q, keys, values, mask, attn.scaling)
        else:
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, scale=attn.scaling, enable_gqa=self.kv_heads != self.heads
            )
        return self.out_proj[index](out.transpose(1, 2).reshape(batch, width, self.heads * self.head_dim))[0]

    def _qk_norm_weight(self, attn) -> torch.Tensor | None:
        """q_norm's and k_norm's weights per head, (H + KV, D), when both are RMSNorms over head_dim with
        one epsilon (Qwen3, MiniMind); None otherwise. Read from the modules at each call, so it is never
        stale."""
        q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        if q_norm is None or k_norm is None:
            return None
        eps = getattr(q_norm, "variance_epsilon", None)
        if eps is None or eps != getattr(k_norm, "variance_epsilon", None):
            return None
        if q_norm.weight.shape != (self.head_dim,) or k_norm.weight.shape != (self.head_dim,):
            return None
        return torch.cat(
            [q_norm.weight.expand(self.heads, -1), k_norm.weight.expand(self.kv_heads, -1)], dim=0
        )

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, store_for) -> torch.Tensor:
        hidden = self.embed(ids)
        cos, sin = self.rotary(hidden, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
        for index, layer in enumerate(self.layers):
            normed = _rms_norm(layer.input_layernorm, hidden)
            hidden = hidden + self._attention(index, normed, cos, sin, store_for(index))
            hidden = hidden + self.mlps[index](_rms_norm(layer.post_attention_layernorm, hidden))
        return hidden

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One token for each of the slots ``0..B-1``: ``tokens`` (B,) sit at ``positions`` (B,), which are
        also the columns they are written to. Returns the next-token logits (B, vocab)."""
        batch = tokens.shape[0]
        width = int(positions.max()) + 1
        if self.device.type == "cpu":
            # whole blocks of columns (masked past each row's position): oneDNN builds a kernel for each
            # new shape of the attention products, ~0.7 ms in bf16, which a width growing by one column a
            # step would pay every step (1.45 ms of a 15 ms bs1 step)
            width = min(self.context_length, -(-width // DECODE_WIDTH_BLOCK) * DECODE_WIDTH_BLOCK)
        self._grow(width)
        rows = torch.arange(batch, device=self.device)
        mask = (torch.arange(width, device=self.device)[None, :] <= positions[:, None]).view(
            batch, 1, 1, width
        )
        if self.device.type == "cpu":  # for _single_query_attention
            mask = torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))

        def store_for(index: int):
            def store(k: torch.Tensor, v: torch.Tensor):
                cache_k, cache_v = self.keys[index], self.values[index]
                cache_k[rows, :, positions] = k[:, :, 0]
                cache_v[rows, :, positions] = v[:, :, 0]
                return cache_k[:batch, :, :width], cache_v[:batch, :, :width], mask

            return store

        hidden = self._layers(tokens[:, None], positions[:, None], store_for)
        return self.head(_rms_norm(self.norm, hidden[:, -1]))[0].float()

    def start_prefill(self, prompt: list[int]) -> PrefillState:
        """A private cache for ``prompt``, its first tokens already filled from the prefix cache when a
        recent prompt started the same way (``done`` says how many; at least the last token is left to run,
        for the logits after it)."""
        shape = (1, self.kv_heads, len(prompt), self.head_dim)
        keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        values = [torch.zeros_like(t) for t in keys]
        cached, shared = self.prefix_cache.longest(prompt)
        done = min(shared, len(prompt) - 1)
        if cached is not None and done > 0:
            for k, v, ck, cv in zip(keys, values, cached.keys, cached.values, strict=True):
                k[:, :, :done] = ck[:, :, :done]
                v[:, :, :done] = cv[:, :, :done]
        return PrefillState(keys=keys, values=values, done=max(done, 0), tokens=list(prompt))

    def prefill(self, work: list[tuple[PrefillState, list[int]]]) -> torch.Tensor:
        """Run the next chunk of several prompts in one forward, packed into one row (no padding: each
        token attends only to its own prompt, causally). Returns the logits after each chunk's last
        token (len(work), vocab)."""
        starts = [state.done for state, _ in work]
        widths = [len(chunk) for _, chunk in work]
        ends = [s + w for s, w in zip(starts, widths, strict=True)]
        ids = torch.tensor([[t for _, chunk in work for t in chunk]], device=self.device)
        positions = torch.cat(
            [torch.arange(s, e, device=self.device) for s, e in zip(starts, ends, strict=True)]
        )
        # block-diagonal causal mask over the concatenated keys: query (prompt i, position p) sees
        # prompt i's keys 0..p
        owner_q = torch.repeat_interleave(torch.arange(len(work), device=self.device), torch.tensor(widths))
        owner_k = torch.repeat_interleave(torch.arange(len(work), device=self.device), torch.tensor(ends))
        key_pos = torch.cat([torch.arange(e, device=self.device) for e in ends])
        mask = (owner_q[:, None] == owner_k[None, :]) & (key_pos[None, :] <= positions[:, None])
        mask = mask.view(1, 1, len(positions), len(key_pos))

        def store_for(index: int):
            def store(k: torch.Tensor, v: torch.Tensor):
                keys, values, offset = [], [], 0
                for (state, _), start, end in zip(work, starts, ends, strict=True):
                    state.keys[index][:, :, start:end] = k[:, :, offset : offset + end - start]
                    state.values[index][:, :, start:end] = v[:, :, offset : offset + end - start]
                    keys.append(state.keys[index][:, :, :end])
                    values.append(state.values[index][:, :, :end])
                    offset += end - start
                if len(work) == 1:
                    return keys[0], values[0], mask
                return torch.cat(keys, dim=2), torch.cat(values, dim=2), mask

            return store

        hidden = self._layers(ids, positions[None, :], store_for)
        for (state, _), end in zip(work, ends, strict=True):
            state.done = end
        last = torch.tensor(widths, device=self.device).cumsum(0) - 1
        return self.head(_rms_norm(self.norm, hidden[0, last]))[0].float()
