"""MiniMind model, written the transformers 5 way (read it side by side with
`models/qwen3/modeling_qwen3.py`).

Top-down: RMSNorm, MLP, rotary helpers, `eager_attention_forward`, Attention (dispatching through
`ALL_ATTENTION_FUNCTIONS`, so eager / sdpa / flash / flex all work), the MoE pieces (router, fused
experts, sparse block, load-balancing loss), DecoderLayer, PreTrainedModel, Model, ForCausalLM.

Self-contained on purpose: it imports only torch and transformers (plus its config beside it), because
`save_pretrained` copies this file into the model folder for `trust_remote_code=True` loading.

State-dict keys equal transformers' Qwen3 (dense) and Qwen3-MoE in its transformers 5 fused layout
(`mlp.gate.weight`, `mlp.experts.gate_up_proj` [E, 2I, H], `mlp.experts.down_proj` [E, H, I]).
"""

import contextlib
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.configuration_utils import PreTrainedConfig
from transformers.generation import GenerationMixin
from transformers.integrations import use_experts_implementation
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_minimind import MiniMindConfig

logger = logging.get_logger(__name__)

# Written into every saved config.json, so all three Auto classes load the folder with trust_remote_code
# (transformers itself only records the class of the object being saved).
AUTO_MAP = {
    "AutoConfig": "configuration_minimind.MiniMindConfig",
    "AutoModel": "modeling_minimind.MiniMindModel",
    "AutoModelForCausalLM": "modeling_minimind.MiniMindForCausalLM",
}


class MiniMindRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 whatever the compute dtype: bf16 squares overflow/underflow quickly.
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class MiniMindMLP(nn.Module):
    """SwiGLU: down(act(gate(x)) * up(x))."""

    def __init__(self, config: MiniMindConfig, intermediate_size: int | None = None):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.intermediate_size = intermediate_size or config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class MiniMindRotaryEmbedding(nn.Module):
    """Rotary cos/sin for given positions; YaRN and the other scalings come from transformers' RoPE table."""

    inv_freq: torch.Tensor

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: MiniMindConfig, **kwargs) -> tuple[torch.Tensor, float]:
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Computed in fp32 even under autocast: positions up to 32k lose precision in bf16.
        inv_freq = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1).to(x.device)
        positions = position_ids[:, None, :].float()
        device_type = x.device.type if x.device.type != "mps" else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            freqs = (inv_freq @ positions).transpose(1, 2)  # (B, T, D/2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
            cos = emb.cos() * self.attention_scaling
            sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotates half the hidden dims of the input (NeoX layout, as Qwen3 and llama.cpp's qwen3 arch)."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim: int = 1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, T, D) -> (B, H_kv * n_rep, T, D) for grouped-query attention."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
):
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask

    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)  # (B, H, T, D)
    attn_output = attn_output.transpose(1, 2).contiguous()  # (B, T, H, D)
    return attn_output, attn_weights


def sdpa_in_fp32_on_cpu(implementation: str, query: torch.Tensor) -> bool:
    """Whether sdpa runs in fp32 although bf16 autocast is on: on the CPU, where torch's bf16 attention
    kernel ran slower than its fp32 one (forward + backward of a training step: 61 vs 43 ms a layer at
    16 x 340 tokens, 4 heads of 32, AMD EPYC with avx512_bf16). The projections around it stay in bf16."""
    return (
        implementation == "sdpa"
        and query.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


class MiniMindAttention(nn.Module):
    """Grouped-query attention with optional per-head q/k RMSNorm (minimind3: on, minimind2: off)."""

    def __init__(self, config: MiniMindConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True

        self.q_proj = nn.Linear(
            config.hidden_size, config.num_attention_heads * self.head_dim, bias=config.attention_bias
        )
        self.k_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.v_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(
            config.num_attention_heads * self.head_dim, config.hidden_size, bias=config.attention_bias
        )
        # Identity (no parameters, no state-dict keys) when off, so minimind2 checkpoints load as they are.
        if config.use_qk_norm:
            self.q_norm = MiniMindRMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = MiniMindRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        else:
            self.q_norm = nn.Identity()
            self.k_norm = nn.Identity()

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(
            1, 2
        )  # (B, H, T, D)
        key_states = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(
            1, 2
        )  # (B, Hkv, T, D)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, Hkv, T, D)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        in_fp32 = sdpa_in_fp32_on_cpu(self.config._attn_implementation, query_states)
        with torch.autocast("cpu", enabled=False) if in_fp32 else contextlib.nullcontext():
            if in_fp32:
                query_states, key_states = query_states.float(), key_states.float()
                value_states = value_states.float()
            attn_output, attn_weights = attention_interface(
                self,
                query_states,
                key_states,
                value_states,
                attention_mask,
                dropout=0.0 if not self.training else self.attention_dropout,
                scaling=self.scaling,
                **kwargs,
            )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights


class MiniMindTopKRouter(nn.Module):
    """Softmax router: picks `num_experts_per_tok` experts per token and their mixing weights."""

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.num_experts
        self.norm_topk_prob = config.norm_topk_prob
        self.top1_gradient = config.router_top1_gradient
        self.hidden_dim = config.hidden_size
        self.weight = nn.Parameter(torch.zeros(self.num_experts, self.hidden_dim))

    def forward(self, hidden_states: torch.Tensor):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)  # (N, E)
        router_probs = F.softmax(router_logits, dtype=torch.float, dim=-1)
        top_value, top_index = torch.topk(router_probs, self.top_k, dim=-1)  # (N, k)
        if self.norm_topk_prob:
            if self.top_k == 1 and self.top1_gradient:
                # Exactly 1.0 forward (p / p), but gradient 1/p reaches the router through the numerator.
                top_value = top_value / top_value.detach()
            else:
                top_value = top_value / top_value.sum(dim=-1, keepdim=True)
        return router_logits, top_value.to(router_logits.dtype), top_index


@use_experts_implementation
class MiniMindExperts(nn.Module):
    """All experts' weights as 3-D tensors, so tokens can be grouped by expert instead of looped over."""

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(
            torch.empty(self.num_experts, 2 * self.intermediate_dim, self.hidden_dim)
        )
        self.down_proj = nn.Parameter(torch.empty(self.num_experts, self.hidden_dim, self.intermediate_dim))
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Eager path: sort the (token, expert) pairs by expert, run each expert once on its contiguous slice.

        One host sync per layer (the group sizes), not one per expert. The default `grouped_mm` path that
        transformers swaps in does the same grouping with no sync at all.
        """
        num_tokens, hidden_dim = hidden_states.shape
        top_k = top_k_index.shape[-1]
        expert_ids = top_k_index.reshape(-1)  # (N*k,)
        order = torch.argsort(expert_ids, stable=True)
        token_of_pair = order // top_k
        grouped = hidden_states[token_of_pair]  # (N*k, H), contiguous per expert
        counts = torch.bincount(expert_ids, minlength=self.num_experts).tolist()

        outputs = []
        for expert, chunk in enumerate(torch.split(grouped, counts)):
            if chunk.shape[0] == 0:
                continue
            gate, up = F.linear(chunk, self.gate_up_proj[expert]).chunk(2, dim=-1)
            outputs.append(F.linear(self.act_fn(gate) * up, self.down_proj[expert]))
        expert_out = torch.cat(outputs) * top_k_weights.reshape(-1)[order, None].to(grouped.dtype)

        final = torch.zeros(num_tokens, hidden_dim, dtype=expert_out.dtype, device=expert_out.device)
        final.index_add_(0, token_of_pair, expert_out)
        return final.to(hidden_states.dtype)


class MiniMindSparseMoeBlock(nn.Module):
    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.gate = MiniMindTopKRouter(config)
        self.experts = MiniMindExperts(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        flat = hidden_states.view(-1, hidden_dim)
        _, routing_weights, selected_experts = self.gate(flat)
        return self.experts(flat, selected_experts, routing_weights).reshape(
            batch_size, sequence_length, hidden_dim
        )


def load_balancing_loss(
    router_logits: tuple[torch.Tensor, ...] | None,
    num_experts: int,
    top_k: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """MiniMind's auxiliary loss: sum over MoE layers of `num_experts * sum_e f_e * P_e`.

    f_e: share of routed (token, slot) assignments that went to expert e, times top_k (the original's
    `one_hot(topk_idx).mean(0)` summed over slots); P_e: mean router probability of e. Padding tokens
    (attention_mask == 0) are left out when a 2-D mask matching the routed tokens is given. Per layer this
    is transformers' Switch-style `load_balancing_loss_func`; the original sums layers where
    transformers averages them, and the 5e-4 coefficient was tuned for the sum.
    """
    if not router_logits:
        return None
    total = 0.0
    for layer_logits in router_logits:
        probs = F.softmax(layer_logits.float(), dim=-1)  # (N, E)
        _, selected = torch.topk(probs, top_k, dim=-1)  # (N, k)
        assignments = F.one_hot(selected, num_experts).float().sum(dim=1)  # (N, E)
        if attention_mask is not None and attention_mask.numel() == probs.shape[0]:
            weight = attention_mask.reshape(-1, 1).to(probs)
            denom = weight.sum().clamp(min=1.0)
            tokens_per_expert = (assignments * weight).sum(0) / denom
            prob_per_expert = (probs * weight).sum(0) / denom
        else:
            tokens_per_expert = assignments.mean(0)
            prob_per_expert = probs.mean(0)
        total = total + num_experts * (tokens_per_expert * prob_per_expert).sum()
    return total


class MiniMindDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: MiniMindConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = MiniMindAttention(config=config, layer_idx=layer_idx)
        self.mlp = MiniMindSparseMoeBlock(config) if config.use_moe else MiniMindMLP(config)
        self.input_layernorm = MiniMindRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MiniMindRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + self.resid_dropout(hidden_states)

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


def original_layout_settings(folder) -> dict:
    """Config settings that make a local folder written by the original MiniMind's code load exactly here.

    The original's config.json has no ``use_qk_norm`` (its minimind-3 code always has q/k norms; minimind2-era
    folders have none) and no ``router_top1_gradient``. So: q/k norm on exactly when the weights have it, and
    the original's router gradient. Its MoE weights are one module per expert; ``per_expert_layout`` says so,
    and `from_pretrained` fuses them on load. Our own folders always write ``use_qk_norm`` and get nothing
    here; neither do Hub names (their files are not looked at)."""
    import json
    import os

    config_file = os.path.join(os.fspath(folder), "config.json")
    if not os.path.isfile(config_file):
        return {}
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model_type") != "minimind" or "use_qk_norm" in config:
        return {}
    keys = _weight_names(os.fspath(folder))
    settings = {"use_qk_norm": any(k.endswith("self_attn.q_norm.weight") for k in keys)}
    if config.get("use_moe"):  # the original's training dynamics; router_top1_gradient=True trains the router
        settings["router_top1_gradient"] = False
    if any(".mlp.experts.0.gate_proj.weight" in k for k in keys):
        settings["per_expert_layout"] = True
    logger.info("%s: a folder in the original MiniMind's format; loading it with %s", folder, settings)
    return settings


# The original's per-expert MoE weights -> our fused experts, the way transformers 5 loads Qwen3-MoE's.
def _per_expert_conversions() -> list:
    from transformers.core_model_loading import Concatenate, MergeModulelist, WeightConverter

    return [
        WeightConverter(
            source_patterns=["mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"],
            target_patterns="mlp.experts.gate_up_proj",
            operations=[MergeModulelist(dim=0), Concatenate(dim=1)],
        ),
        WeightConverter(
            source_patterns="mlp.experts.*.down_proj.weight",
            target_patterns="mlp.experts.down_proj",
            operations=[MergeModulelist(dim=0)],
        ),
    ]


_CONVERSION_LOCK = threading.Lock()


@contextlib.contextmanager
def _converting_per_expert_weights():
    """Registers the per-expert conversion for the duration of one load only: registered for good,
    transformers would also apply it in reverse on every save, and our own folders keep the fused layout."""
    from transformers import conversion_mapping

    with _CONVERSION_LOCK:
        conversion_mapping.register_checkpoint_conversion_mapping(
            MiniMindConfig.model_type, _per_expert_conversions(), overwrite=True
        )
        try:
            yield
        finally:
            conversion_mapping._checkpoint_conversion_mapping_cache.pop(MiniMindConfig.model_type, None)
            conversion_mapping.USER_REGISTERED_MAPPINGS.discard(MiniMindConfig.model_type)


def _weight_names(folder: str) -> list[str]:
    """Tensor names in a folder's safetensors files (headers only) or pytorch_model.bin."""
    import glob
    import os

    from safetensors import safe_open

    names = []
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(path, framework="pt") as f:
            names += list(f.keys())
    if not names and os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        names = list(
            torch.load(os.path.join(folder, "pytorch_model.bin"), map_location="meta", weights_only=True)
        )
    return names


class MiniMindPreTrainedModel(PreTrainedModel):
    config: MiniMindConfig
    config_class = MiniMindConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MiniMindDecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = False  # the eager MoE path syncs once per layer; dense models compile fine
    # vLLM's transformers backend and `attn_implementation="kernels-..."` need attention kwargs passed
    # through.
    _supports_attention_backend = True
    _can_record_outputs = {
        "router_logits": OutputRecorder(MiniMindTopKRouter, index=0),
        "hidden_states": MiniMindDecoderLayer,
        "attentions": MiniMindAttention,
    }

    def save_pretrained(self, *args, **kwargs):
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        # A folder saved by the original MiniMind's own code loads exactly, or is refused naming the one
        # command that converts it: never with weights silently re-initialised
        # (see `original_layout_settings`).
        config = kwargs.get("config")
        settings = original_layout_settings(pretrained_model_name_or_path)
        per_expert = settings.pop("per_expert_layout", False)
        for key, value in settings.items():
            if not isinstance(config, PreTrainedConfig):
                kwargs.setdefault(key, value)
            elif str(getattr(config, "name_or_path", "")) == str(pretrained_model_name_or_path):
                setattr(config, key, value)  # read from this folder by AutoModel* just before
        if not per_expert:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        with _converting_per_expert_weights():
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model._weight_conversions = None  # saving writes our fused layout (with use_qk_norm: our format)
        return model

    def _activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, *args, **kwargs):
        # Reentrant checkpointing reruns the forward under no_grad, so the router logits captured for the
        # MoE aux loss would carry no gradient: the load-balancing term would silently train nothing.
        ckpt_kwargs = dict(activation_checkpointing_kwargs or {"use_reentrant": False})
        if self.config.use_moe and ckpt_kwargs.get("use_reentrant", False):
            logger.warning(
                "MiniMind MoE: use_reentrant=True would detach the aux loss; using use_reentrant=False"
            )
            ckpt_kwargs["use_reentrant"] = False
        return super()._activation_checkpointing_enable(ckpt_kwargs, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, MiniMindExperts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, MiniMindTopKRouter):
            init.normal_(module.weight, mean=0.0, std=std)


class MiniMindModel(MiniMindPreTrainedModel):
    def __init__(self, config: MiniMindConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            [MiniMindDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = MiniMindRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MiniMindRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MoeModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        # No cache in training: nothing reads it, and it would cost memory every step.
        if use_cache and cache is None and not self.training:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = (
                torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            )
            position_ids = position_ids.unsqueeze(0)

        # A 2-D padding mask becomes the backend's causal mask. With no mask and packed position_ids
        # (restarting at 0 per document), transformers builds the block-diagonal mask itself.
        # transformers only looks for packed documents when no cache is passed; an empty DynamicCache
        # (a plain eval forward with use_cache=True) changes nothing else about the mask.
        mask_cache = cache
        if isinstance(cache, DynamicCache) and attention_mask is None and cache.get_seq_length() == 0:
            mask_cache = None
        if isinstance(attention_mask, dict):  # prepared by generate()
            causal_mask = attention_mask["full_attention"]
        else:
            causal_mask = create_causal_mask(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                cache=mask_cache,
                position_ids=position_ids,
            )

        hidden_states = self.embed_dropout(inputs_embeds)
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return MoeModelOutputWithPast(last_hidden_state=hidden_states, cache=cache if use_cache else None)


# The original MiniMind's chat/eval sampling (temperature 0.85, top_p 0.85)
GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.85, "top_p": 0.85}


def _share_of_step(labels: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """This micro-batch's label tokens / ``num_items_in_batch``, counted as transformers' Trainer counts
    them (``shift_labels`` when given, else ``labels[..., 1:]``)."""
    shifted = kwargs.get("shift_labels")
    own = (shifted if shifted is not None else labels[..., 1:]).ne(-100).sum()
    total = kwargs["num_items_in_batch"]
    total = (
        total.to(own.device) if isinstance(total, torch.Tensor) else torch.tensor(total, device=own.device)
    )
    return own / total.clamp(min=1)


class MiniMindForCausalLM(MiniMindPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: MiniMindConfig):
        super().__init__(config)
        self.model = MiniMindModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        if self.generation_config is not None:
            # MiniMind's sampling defaults; saved as generation_config.json, so transformers' generate(), the
            # server, the chat front ends, vLLM and the Ollama export all start from them (a folder's own
            # generation_config.json replaces them on load)
            self.generation_config.update(**GENERATION_DEFAULTS)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        aux_loss_weight: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MoeCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token ids to predict; shifted inside the loss. `-100` marks positions without loss. Pass
            `num_items_in_batch` (total label tokens over all accumulated micro-batches) for exact
            gradient accumulation.
        output_router_logits (`bool`, *optional*):
            MoE only: return the router logits of every layer and the auxiliary load-balancing loss. They are
            always computed when training with labels, so the aux loss reaches the optimiser.
        logits_to_keep (`int` or `torch.Tensor`, defaults to 0):
            Compute logits for the last `n` positions only (0 = all), or for the given indices.
        aux_loss_weight (`float`, *optional*):
            MoE only: the weight of the aux loss added to `loss` (default `config.router_aux_loss_coef`). A
            loop that accumulates several micro-batches per step passes `coef / micro_batches` so the aux
            loss is averaged over the step, as the cross-entropy is through `num_items_in_batch`. Without
            it, a call given `num_items_in_batch` (transformers' `Trainer`, which sums the micro-batches'
            losses) weights the aux loss by this micro-batch's share of the step's label tokens: the step
            then gets `coef` times the token-weighted mean of its aux losses, not their sum. (trl's
            `SFTTrainer` scores tokens itself and adds `coef * aux_loss / accumulation steps`.)
        """
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        want_aux = self.config.use_moe and (output_router_logits or (self.training and labels is not None))
        if want_aux:
            kwargs["output_router_logits"] = True

        outputs: MoeModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )

        aux_loss = None
        if want_aux:
            mask = (
                attention_mask
                if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2
                else None
            )
            aux_loss = load_balancing_loss(
                outputs.router_logits, self.config.num_experts, self.config.num_experts_per_tok, mask
            )
            if loss is not None and aux_loss is not None:
                weight = self.config.router_aux_loss_coef if aux_loss_weight is None else aux_loss_weight
                if aux_loss_weight is None and kwargs.get("num_items_in_batch") is not None:
                    weight = weight * _share_of_step(labels, kwargs)
                loss = loss + weight * aux_loss.to(loss.device)

        return MoeCausalLMOutputWithPast(
            loss=loss,
            aux_loss=aux_loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=outputs.router_logits if output_router_logits else None,
        )


__all__ = ["MiniMindForCausalLM", "MiniMindModel", "MiniMindPreTrainedModel", "load_balancing_loss"]
