"""Exactness against independent references: transformers' own Qwen3, Qwen3-MoE and Llama.

Same weights (our state-dict keys are Qwen3's), fp32, max abs logit difference < 1e-4 for a single
sequence, a left-padded batch, and step-by-step decoding with the KV cache.
Reference for q/k norm off (minimind2 style): transformers' `LlamaForCausalLM`, which is the same
architecture without the per-head q/k RMSNorm.
"""

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from minimind_hf import MiniMindConfig, MiniMindForCausalLM

TOL = 1e-4
VOCAB = 320


def _common(cfg: MiniMindConfig) -> dict:
    return dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters=dict(cfg.rope_parameters),
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def reference_for(cfg: MiniMindConfig):
    """The transformers model that should compute exactly what `cfg` describes."""
    if cfg.use_moe:
        ref_cfg = Qwen3MoeConfig(
            **_common(cfg),
            num_experts=cfg.num_experts,
            num_experts_per_tok=cfg.num_experts_per_tok,
            moe_intermediate_size=cfg.moe_intermediate_size,
            norm_topk_prob=cfg.norm_topk_prob,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        )
        return Qwen3MoeForCausalLM(ref_cfg)
    if cfg.use_qk_norm:
        return Qwen3ForCausalLM(Qwen3Config(**_common(cfg)))
    return LlamaForCausalLM(LlamaConfig(**_common(cfg), attention_bias=False, mlp_bias=False))


def build_pair(seed: int = 0, attn: str = "sdpa", **overrides):
    torch.manual_seed(seed)
    cfg = MiniMindConfig.from_preset("tiny", vocab_size=VOCAB, **overrides)
    ours = MiniMindForCausalLM._from_config(cfg, attn_implementation=attn).eval()
    # Non-trivial norm weights, so q/k norm and the final norm are really exercised.
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    ref = reference_for(cfg)
    ref.config._attn_implementation = attn
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    # lm_head is tied in both: it may be reported missing/unexpected but aliases embed_tokens.
    assert not [k for k in missing if k != "lm_head.weight"], missing
    assert not [k for k in unexpected if k != "lm_head.weight"], unexpected
    ref.tie_weights()
    ref.eval()
    assert torch.equal(ref.lm_head.weight, ours.lm_head.weight)
    return ours, ref


CASES = {
    "dense-qwen3": {},
    "dense-yarn": {"inference_rope_scaling": True},
    "no-qknorm-llama": {"use_qk_norm": False, "rms_norm_eps": 1e-5},
    "moe-top1": {"use_moe": True, "num_experts": 4, "num_experts_per_tok": 1, "moe_intermediate_size": 96},
    "moe-top2": {"use_moe": True, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 96},
    "moe-top2-unnormed": {
        "use_moe": True,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 96,
        "norm_topk_prob": False,
    },
}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("case", list(CASES))
def test_single_sequence(case):
    ours, ref = build_pair(**CASES[case])
    ids = torch.randint(3, VOCAB, (1, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = _max_diff(ours(ids).logits, ref(ids).logits)
    assert diff < TOL, f"{case}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("case", list(CASES))
def test_left_padded_batch(case, attn):
    ours, ref = build_pair(attn=attn, **CASES[case])
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, VOCAB, (3, 17), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 5, 11]):
        ids[row, :pad] = 0
        mask[row, :pad] = 0
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = ref(ids, attention_mask=mask).logits
    real = mask.bool()
    diff = _max_diff(a[real], b[real])
    assert diff < TOL, f"{case}/{attn}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("case", list(CASES))
def test_kv_cache_decoding(case):
    """Prefill 9 tokens, then feed 8 tokens one by one through each model's own DynamicCache."""
    ours, ref = build_pair(**CASES[case])
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, VOCAB, (2, 17), generator=g)
    worst = 0.0
    with torch.no_grad():
        out_a = ours(ids[:, :9], use_cache=True)
        out_b = ref(ids[:, :9], use_cache=True)
        worst = max(worst, _max_diff(out_a.logits, out_b.logits))
        cache_a, cache_b = out_a.cache, out_b.cache
        for t in range(9, 17):
            out_a = ours(ids[:, t : t + 1], cache=cache_a, use_cache=True)
            out_b = ref(ids[:, t : t + 1], cache=cache_b, use_cache=True)
            worst = max(worst, _max_diff(out_a.logits, out_b.logits))
            cache_a, cache_b = out_a.cache, out_b.cache
        # The cached path must also agree with our own full forward at the last step.
        full = ours(ids).logits[:, -1]
    assert worst < TOL, f"{case}: max abs diff {worst:.2e}"
    assert _max_diff(full, out_a.logits[:, -1]) < TOL


@pytest.mark.parametrize("case", ["dense-qwen3", "moe-top2"])
def test_greedy_generation_matches_reference(case):
    ours, ref = build_pair(**CASES[case])
    ids = torch.randint(3, VOCAB, (1, 6), generator=torch.Generator().manual_seed(4))
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours.generate(ids, **kw), ref.generate(ids, **kw))
