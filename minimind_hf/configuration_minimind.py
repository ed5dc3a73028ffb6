"""MiniMind configuration: every architecture field of the original MiniMind, in transformers 5 form.

MiniMind is Qwen3-shaped (RMSNorm, optional per-head q/k RMSNorm, GQA, RoPE with optional YaRN, SwiGLU,
tied embeddings, optional MoE). This file must stay importable with only torch/transformers installed:
`save_pretrained` copies it next to the weights so a folder loads with `trust_remote_code=True` on a
machine where `minimind_hf` is not installed.

Presets (`MiniMindConfig.from_preset(name, **overrides)`):

| preset         | hidden | layers | q/kv heads | head_dim | FFN                 | params  |
|----------------|--------|--------|------------|----------|---------------------|---------|
| tiny           | 64     | 2      | 4 / 2      | 16       | 192                 | 0.5M    |
| minimind3      | 768    | 8      | 8 / 4      | 96       | 2432                | 63.9M   |
| minimind3-moe  | 768    | 8      | 8 / 4      | 96       | 4 experts x 2432    | 198.4M  |
| minimind2-small| 512    | 8      | 8 / 2      | 64       | 1408                | 25.8M   |
| minimind2      | 768    | 16     | 8 / 2      | 96       | 2048                | 104M    |
"""

import copy
import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

# MiniMind's YaRN settings (the original applies them at inference only). attention_factor is 1.0 on
# purpose: transformers would otherwise infer 0.1*ln(16)+1 ~= 1.277 and change every logit.
MINIMIND_YARN = {
    "rope_type": "yarn",
    "factor": 16.0,
    "original_max_position_embeddings": 2048,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "attention_factor": 1.0,
}

_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


def default_intermediate_size(hidden_size: int) -> int:
    """MiniMind-3's FFN width rule: ceil(hidden * pi / 64) * 64 (768 -> 2432)."""
    return math.ceil(hidden_size * math.pi / 64) * 64


@strict
class MiniMindConfig(PreTrainedConfig):
    r"""
    Configuration of a MiniMind model (dense or MoE). Defaults are the `minimind3` preset.

    Args:
        vocab_size (`int`, defaults to 6400):
            Vocabulary size; MiniMind's ByteLevel BPE has 6400 tokens (ids 0-35 reserved).
        hidden_size (`int`, defaults to 768):
            Width of the residual stream.
        intermediate_size (`int`, *optional*):
            SwiGLU inner width of the dense MLP. Defaults to `ceil(hidden_size * pi / 64) * 64`.
        num_hidden_layers (`int`, defaults to 8):
            Number of decoder layers.
        num_attention_heads (`int`, defaults to 8):
            Number of query heads.
        num_key_value_heads (`int`, *optional*, defaults to 4):
            Number of key/value heads (grouped-query attention); must divide `num_attention_heads`.
            `None` means multi-head attention (same as `num_attention_heads`).
        head_dim (`int`, *optional*):
            Size of one attention head. Defaults to `hidden_size // num_attention_heads`, which then must
            divide.
        hidden_act (`str`, defaults to `"silu"`):
            Activation of the gated MLP (SwiGLU with silu).
        max_position_embeddings (`int`, defaults to 32768):
            Longest sequence the position encoding is configured for.
        initializer_range (`float`, defaults to 0.02):
            Std of the normal initialisation of linear and embedding weights.
        rms_norm_eps (`float`, defaults to 1e-6):
            Epsilon of every RMSNorm (minimind2 used 1e-5).
        use_qk_norm (`bool`, defaults to `True`):
            Per-head RMSNorm on queries and keys before RoPE
            (Qwen3 style; on for minimind3, off for minimind2).
        use_cache (`bool`, defaults to `True`):
            Whether generation keeps a key/value cache.
        tie_word_embeddings (`bool`, defaults to `True`):
            Share the input embedding with the output projection (`lm_head`).
        rope_parameters (`dict`, *optional*):
            transformers 5 RoPE parameters. Defaults to `{"rope_type": "default", "rope_theta": 1e6}`.
            For YaRN use `rope_type="yarn"` with `factor`, `original_max_position_embeddings`,
            `beta_fast`, `beta_slow`, `attention_factor` (see `inference_rope_scaling`).
        inference_rope_scaling (`bool`, defaults to `False`):
            The original MiniMind switch: when `True` and `rope_parameters` does not already name a scaling
            type, use MiniMind's YaRN (factor 16 over 2048 original positions, beta_fast 32, beta_slow 1,
            attention_factor 1.0). It changes the rotary frequencies, so it applies to training as well.
        attention_bias (`bool`, defaults to `False`):
            Biases on the q/k/v/o projections (MiniMind has none).
        attention_dropout (`float`, defaults to 0.0):
            Dropout on attention probabilities during training.
        dropout (`float`, defaults to 0.0):
            Dropout on the embeddings and on each residual branch output during training (the original's
            `dropout`).
        use_moe (`bool`, defaults to `False`):
            Replace every dense MLP with a mixture of experts.
        num_experts (`int`, defaults to 4):
            Number of routed experts per MoE layer.
        num_experts_per_tok (`int`, defaults to 1):
            Experts chosen per token (top-k of the softmax router).
        moe_intermediate_size (`int`, *optional*):
            Inner width of each expert. Defaults to `intermediate_size`.
        norm_topk_prob (`bool`, defaults to `True`):
            Renormalise the chosen experts' probabilities to sum to 1 (llama.cpp always does this).
        router_top1_gradient (`bool`, defaults to `True`):
            With top-1 routing and `norm_topk_prob`, the expert weight is exactly 1.0 and the router gets no
            gradient from the language-model loss (the original's behaviour). When `True`, the weight is
            computed as `p / p.detach()`: still exactly 1.0 in the forward pass (so logits, exports and
            llama.cpp agree), but d(weight)/dp = 1/p lets the LM loss train the router. Set `False` to
            reproduce the original's training dynamics for imported checkpoints.
        router_aux_loss_coef (`float`, *optional*):
            Weight of the load-balancing loss added to the LM loss in training (default 5e-4 with `use_moe`,
            0.0 for dense models: trl enables its MoE aux-loss path whenever this is non-zero). The aux loss
            is the original's: per MoE layer `num_experts * sum_e(f_e * P_e)`, summed over layers.
        output_router_logits (`bool`, defaults to `False`):
            Return each MoE layer's router logits (always computed when training with labels).
        pad_token_id / bos_token_id / eos_token_id (`int`, defaults to 0 / 1 / 2):
            `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` in MiniMind's tokenizer.

    Example:

    ```python
    >>> from minimind_hf import MiniMindConfig, MiniMindForCausalLM
    >>> config = MiniMindConfig.from_preset("minimind3")
    >>> model = MiniMindForCausalLM(config)
    ```
    """

    model_type = "minimind"
    keys_to_ignore_at_inference = ["cache"]
    default_theta = 1_000_000.0

    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.q_norm": "replicated_with_grad_allreduce",
        "layers.*.self_attn.k_norm": "replicated_with_grad_allreduce",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 6400
    hidden_size: int = 768
    intermediate_size: int | None = None
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int | None = 4
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_qk_norm: bool = True
    use_cache: bool = True
    tie_word_embeddings: bool = True
    rope_parameters: dict | None = None
    inference_rope_scaling: bool = False
    attention_bias: bool = False
    attention_dropout: float | int = 0.0
    dropout: float | int = 0.0
    use_moe: bool = False
    num_experts: int = 4
    num_experts_per_tok: int = 1
    moe_intermediate_size: int | None = None
    norm_topk_prob: bool = True
    router_top1_gradient: bool = True
    router_aux_loss_coef: float | None = None
    output_router_logits: bool = False
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        # Left as None when it cannot be derived, so validation reports it with the other problems.
        if (
            self.head_dim is None
            and self.num_attention_heads > 0
            and self.hidden_size % self.num_attention_heads == 0
        ):
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = default_intermediate_size(self.hidden_size)
        if self.moe_intermediate_size is None:
            self.moe_intermediate_size = self.intermediate_size
        if self.router_aux_loss_coef is None:
            self.router_aux_loss_coef = 5e-4 if self.use_moe else 0.0
        # Checkpoints of the original carry `rope_scaling` with `"type": "yarn"` or the bool switch only.
        if self.inference_rope_scaling and not (self.rope_parameters or kwargs.get("rope_scaling")):
            self.rope_parameters = dict(MINIMIND_YARN)
        super().__post_init__(**kwargs)
        if self.rope_parameters is not None:
            self.rope_parameters.setdefault("rope_theta", self.default_theta)
            self.rope_parameters.pop("type", None)  # legacy alias of rope_type, already copied over
        self._check_architecture()

    def validate_minimind_architecture(self) -> None:
        """transformers' ``validate_*`` hook (`validate()`, which `save_pretrained` runs): the checks of
        construction again, so a config edited after it was built cannot be saved inconsistent."""
        self._check_architecture()

    def _check_architecture(self) -> None:
        """Check the architecture fields together and raise one ValueError listing every problem."""
        errors = []
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        ):
            if getattr(self, name) <= 0:
                errors.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads > 0:
            if self.head_dim is None:
                errors.append(
                    f"hidden_size ({self.hidden_size}) is not divisible by num_attention_heads "
                    f"({self.num_attention_heads}); pass head_dim explicitly or change one of them"
                )
            if self.num_key_value_heads <= 0 or self.num_attention_heads % self.num_key_value_heads:
                errors.append(
                    f"num_key_value_heads ({self.num_key_value_heads}) must divide num_attention_heads "
                    f"({self.num_attention_heads})"
                )
        if self.head_dim is not None and self.head_dim % 2:
            errors.append(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.use_moe:
            if self.num_experts < 1:
                errors.append(f"num_experts must be >= 1 with use_moe, got {self.num_experts}")
            if not 1 <= self.num_experts_per_tok <= self.num_experts:
                errors.append(
                    f"num_experts_per_tok ({self.num_experts_per_tok}) must be between 1 and num_experts "
                    f"({self.num_experts})"
                )
        errors.extend(_rope_errors(self.rope_parameters))
        if errors:
            raise ValueError("Invalid MiniMindConfig:\n  - " + "\n  - ".join(errors))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MiniMindConfig":
        """Build a config from a named preset (see `PRESETS`); keyword arguments override preset fields."""
        if name not in PRESETS:
            raise ValueError(f"Unknown MiniMind preset {name!r}. Valid presets: {', '.join(PRESETS)}")
        fields = copy.deepcopy(PRESETS[name])
        fields.update(overrides)
        return cls(**fields)


def _rope_errors(rope: dict | None) -> list[str]:
    if not rope:
        return []
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    errors = []
    if rope_type not in _ROPE_TYPES:
        errors.append(f"rope_parameters.rope_type {rope_type!r} is not one of {', '.join(_ROPE_TYPES)}")
    if rope.get("rope_theta") is not None and rope["rope_theta"] <= 0:
        errors.append(f"rope_parameters.rope_theta must be positive, got {rope['rope_theta']}")
    if rope_type == "yarn":
        factor = rope.get("factor")
        if factor is None or factor < 1:
            errors.append(f"rope_parameters.factor must be >= 1 for yarn, got {factor}")
        if rope.get("original_max_position_embeddings") in (None, 0):
            errors.append("rope_parameters.original_max_position_embeddings is required for yarn")
        if rope.get("beta_fast", 32) <= rope.get("beta_slow", 1):
            errors.append("rope_parameters.beta_fast must be larger than beta_slow")
    return errors


PRESETS: dict[str, dict[str, Any]] = {
    # For tests and the CPU quickstart: 2 layers, hidden 64.
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=192,
    ),
    "minimind3": dict(
        hidden_size=768,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=96,
        intermediate_size=2432,
    ),
    "minimind3-moe": dict(
        hidden_size=768,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=96,
        intermediate_size=2432,
        use_moe=True,
        num_experts=4,
        num_experts_per_tok=1,
        moe_intermediate_size=2432,
    ),
    # minimind2 used FFN = 64 * ceil(8 * hidden / 3 / 64), no q/k norm and eps 1e-5.
    "minimind2-small": dict(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=1408,
        use_qk_norm=False,
        rms_norm_eps=1e-5,
    ),
    "minimind2": dict(
        hidden_size=768,
        num_hidden_layers=16,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=96,
        intermediate_size=2048,
        use_qk_norm=False,
        rms_norm_eps=1e-5,
    ),
}

__all__ = ["MiniMindConfig", "PRESETS", "MINIMIND_YARN", "default_intermediate_size"]
