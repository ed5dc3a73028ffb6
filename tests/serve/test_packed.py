"""The serving decoder's fast paths: oneDNN-prepacked fused projections, the single-query attention of a
decode step, and bf16 serving, each against plain torch / transformers' own forward."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minimind_hf import MiniMindConfig, MiniMindForCausalLM
from minimind_hf.serve import chat, packed
from minimind_hf.serve.slots import SlotDecoder, _single_query_attention

needs_onednn = pytest.mark.skipif(not packed.can_pack(torch.zeros(1)), reason="no oneDNN on this torch build")


def _linears(*widths: int, bias: bool, dtype=torch.float32) -> list[nn.Linear]:
    torch.manual_seed(0)
    return [nn.Linear(48, w, bias=bias).to(dtype) for w in widths]


@needs_onednn
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (8, 48), (2, 5, 48)])
def test_fused_projection_equals_each_linear(bias, shape):
    modules = _linears(32, 16, 16, bias=bias)
    if bias:  # a Qwen2-like mix: one projection without a bias
        modules[1].bias = None
    projection = packed.Projection(modules)
    assert projection.pack
    x = torch.randn(*shape)
    with torch.inference_mode():
        outputs = projection(x)
    for out, module in zip(outputs, modules, strict=True):
        torch.testing.assert_close(out, F.linear(x, module.weight, module.bias), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_bf16_projection_is_as_close_to_fp32_as_torchs_own_bf16_linear():
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no bf16 oneDNN kernels on this CPU")
    (module,) = _linears(64, bias=True)
    x = torch.randn(8, 48)
    reference = F.linear(x, module.weight, module.bias)
    bf16 = module.to(torch.bfloat16)
    with torch.inference_mode():
        ours = packed.Projection([bf16])(x.bfloat16())[0].float()
        torchs = bf16(x.bfloat16()).float()
    assert (ours - reference).abs().max() <= 2 * (torchs - reference).abs().max() + 1e-3


@needs_onednn
def test_projection_repacks_after_its_weights_change():
    """An optimizer step, load_state_dict or a swapped parameter must never leave a stale packed copy."""
    modules = _linears(32, 16, bias=True)
    projection = packed.Projection(modules)
    x = torch.randn(3, 48)
    with torch.inference_mode():
        projection(x)
    with torch.no_grad():
        modules[0].weight.add_(0.5)  # in place, as an optimizer does
        modules[1].bias.zero_()
    modules[1].weight = nn.Parameter(torch.randn(16, 48))  # replaced
    with torch.inference_mode():
        first, second = projection(x)
    torch.testing.assert_close(first, modules[0](x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, modules[1](x), rtol=1e-5, atol=1e-5)


def test_projection_calls_its_modules_where_onednn_cannot_run():
    modules = _linears(32, 16, bias=False, dtype=torch.float16)  # no fp16 kernels on the CPU here
    projection = packed.Projection(modules)
    assert not projection.pack
    x = torch.randn(2, 48, dtype=torch.float16)
    assert all(torch.equal(a, m(x)) for a, m in zip(projection(x), modules, strict=True))
    with torch.inference_mode():  # an inference tensor has no version counter to catch a stale copy by
        made_here = nn.Linear(48, 8)
    assert not packed.Projection([made_here]).pack


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_single_query_attention_equals_sdpa(dtype):
    """Grouped query heads, a different length per row, keys seen through a view of a larger cache."""
    torch.manual_seed(0)
    batch, heads, kv_heads, dim, length = 3, 8, 2, 16, 20
    q = torch.randn(batch, heads, 1, dim)
    cache_k, cache_v = torch.randn(batch, kv_heads, 64, dim), torch.randn(batch, kv_heads, 64, dim)
    keys, values = cache_k[:, :, :length], cache_v[:, :, :length]
    seen = torch.arange(length)[None, :] <= torch.tensor([4, 19, 11])[:, None]
    bias = torch.zeros(batch, 1, 1, length).masked_fill_(~seen.view(batch, 1, 1, length), float("-inf"))
    reference = F.scaled_dot_product_attention(
        q, keys, values, attn_mask=seen.view(batch, 1, 1, length), scale=0.3, enable_gqa=True
    )
    ours = _single_query_attention(q.to(dtype), keys.to(dtype), values.to(dtype), bias, 0.3)
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(ours.float(), reference, rtol=tolerance, atol=tolerance)


def test_bf16_decoder_is_as_close_to_fp32_as_transformers_bf16_forward(tiny_tokenizer):
    """The whole decoder in bf16 (packed projections, single-query attention, the cache) against the fp32
    model: its error is of the size of the model's own bf16 forward's."""
    torch.manual_seed(0)
    config = MiniMindConfig.from_preset("tiny", vocab_size=len(tiny_tokenizer), max_position_embeddings=128)
    model = MiniMindForCausalLM(config).eval()
    ids = torch.randint(0, len(tiny_tokenizer), (24,)).tolist()
    model_bf16 = MiniMindForCausalLM(config).eval()
    model_bf16.load_state_dict(model.state_dict())
    model_bf16.to(torch.bfloat16)
    with torch.inference_mode():
        reference = model(torch.tensor([ids])).logits[0, -2:].float()
        theirs = model_bf16(torch.tensor([ids])).logits[0, -2:].float()
        decoder = SlotDecoder(model_bf16, slots=2, context_length=128)
        state = decoder.start_prefill(ids[:23])
        prefill_logits = decoder.prefill([(state, ids[:23])])[0]
        decoder.admit(state, 0)
        decode_logits = decoder.decode(torch.tensor([ids[23]]), torch.tensor([23]))[0]
    ours = torch.stack([prefill_logits, decode_logits])
    their_error = (theirs - reference).abs().max()
    assert (ours - reference).abs().max() <= 2 * their_error + 1e-2
    assert torch.equal(ours.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_serves_fp32_checkpoints_in_bf16_only_where_the_cpu_has_bf16(
    native, model_dir, monkeypatch, caplog
):
    monkeypatch.setattr(packed, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.INFO, logger="minimind_hf.serve.chat"):
        model, _ = chat.load_model(model_dir)
    assert model.dtype == (torch.bfloat16 if native else torch.float32)
    assert ("in bfloat16" in caplog.text) is native
    model, _ = chat.load_model(model_dir, dtype="float32")  # asked for: kept
    assert model.dtype == torch.float32
    with pytest.raises(ValueError, match="'half'"):
        chat.load_model(model_dir, dtype="half")


def _prefilled_logits(decoder: SlotDecoder, prompt: list[int], slot: int) -> tuple[torch.Tensor, int]:
    state = decoder.start_prefill(prompt)
    reused = state.done
    with torch.inference_mode():
        logits = decoder.prefill([(state, prompt[state.done :])])[0]
    decoder.admit(state, slot)
    return logits, reused


def test_prefix_cache_reuses_a_shared_beginning_exactly(tiny_tokenizer):
    """A prompt starting like an earlier one prefills only the rest; its logits and cache equal a fresh
    decoder's. A repeated prompt reruns its last token only; new weights empty the cache."""
    torch.manual_seed(0)
    config = MiniMindConfig.from_preset("tiny", vocab_size=len(tiny_tokenizer), max_position_embeddings=128)
    model = MiniMindForCausalLM(config).eval()
    first = torch.randint(0, len(tiny_tokenizer), (30,)).tolist()
    second = first[:20] + torch.randint(0, len(tiny_tokenizer), (9,)).tolist()
    cached = SlotDecoder(model, slots=2, context_length=128, prefix_cache_tokens=100)
    fresh = SlotDecoder(model, slots=2, context_length=128)
    _prefilled_logits(cached, first, 0)
    ours, reused = _prefilled_logits(cached, second, 1)
    theirs, none = _prefilled_logits(fresh, second, 1)
    assert (reused, none) == (20, 0)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for mine, other in zip(cached.keys, fresh.keys, strict=True):
        torch.testing.assert_close(mine[1, :, :29], other[1, :, :29], rtol=1e-5, atol=1e-5)
    again, reused = _prefilled_logits(cached, first, 0)
    assert reused == 29
    torch.testing.assert_close(again, _prefilled_logits(fresh, first, 0)[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)  # an optimizer step
    assert cached.start_prefill(first).done == 0 and len(cached.prefix_cache) == 0


def test_prefix_cache_keeps_the_most_recent_prompts_within_its_budget(tiny_tokenizer):
    from minimind_hf.serve.prefix_cache import PrefixCache

    model = MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=64))
    cache = PrefixCache(model, max_tokens=25)
    kv = [torch.zeros(1, 1, 10, 2)]
    for first in (1, 2, 3):
        cache.add([first] * 10, kv, kv)
    assert len(cache) == 2 and cache.longest([1] * 10) == (None, 0)  # the oldest went
    assert cache.longest([2] * 12)[1] == 10 and cache.longest([3, 3, 9])[1] == 2
    cache.add([4] * 30, kv, kv)  # larger than the whole budget: not kept
    assert cache.longest([4] * 30) == (None, 0)
    assert PrefixCache(model, 0).longest([2] * 10) == (None, 0)
    with pytest.raises(ValueError, match="-1"):
        PrefixCache(model, -1)
