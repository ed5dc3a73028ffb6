"""The serving decoder's matrix products: fused, and on the CPU prepacked for oneDNN.

A decode step multiplies a few rows (one per running request) by every weight matrix of the model, so its
cost is reading the weights. torch's default CPU path for so few rows reads them slowly: it converts bf16
to fp32 as it goes and does not block the matrix for the cache. oneDNN's matmul on a weight reordered once
into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, what inductor's ``freezing`` does
for a compiled CPU linear) runs the same products about twice as fast. Measured on minimind3's 57 weight
matrices, one thread of a 2-core EPYC: bf16 22.9 -> 9-10 ms per step at 1 to 8 rows, fp32 23.9 -> 17-20 ms.

Projections that read the same input are fused into one product (q/k/v, gate/up): fewer, larger calls.

A packed weight is a copy, so it is checked against its source before every use: if a weight was
replaced or changed in place (an optimizer step, ``load_state_dict``), the projection repacks itself.
Anywhere oneDNN cannot run (another device, a dtype it has no kernel for here, a tensor subclass), a
projection just calls its modules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Rows the weight layout is chosen for (a hint: any row count works). Measured on minimind3's matrices,
# one thread: a layout for 8 rows decodes 1-16 rows as fast as the layouts chosen for each of them.
PACK_ROWS = 8


def _onednn_dtypes() -> tuple[torch.dtype, ...]:
    if not torch.backends.mkldnn.is_available():
        return ()
    dtypes = [torch.float32]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        dtypes.append(torch.bfloat16)
    return tuple(dtypes)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there bf16 weights decode about
    1.5x faster than fp32 ones (half the bytes to read); elsewhere oneDNN emulates bf16 and fp32 is as fast.
    """
    if torch.bfloat16 not in _onednn_dtypes():
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: no way to tell cheaply, so keep fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def can_pack(weight: torch.Tensor) -> bool:
    """Whether oneDNN multiplies by this weight here: a plain CPU tensor of a dtype it has kernels for, and
    not an inference tensor (made under ``torch.inference_mode``), which has no version counter to tell
    when a packed copy went stale."""
    return (
        weight.device.type == "cpu"
        and type(weight) in (torch.Tensor, nn.Parameter)
        and weight.dtype in _onednn_dtypes()
        and not weight.is_inference()
    )


class Projection:
    """``x @ W.T (+ b)`` for the weights of ``modules`` (``nn.Linear``s reading the same input), fused:
    ``__call__`` returns one output per module, as views of one product.

    Args:
        modules: linear layers with the same input width.
        pack: use oneDNN's prepacked weights where :func:`can_pack` allows (False: always the modules).
    """

    def __init__(self, modules: Sequence[nn.Linear], pack: bool = True):
        if not modules:
            raise ValueError("a projection needs at least one linear layer")
        self.modules = list(modules)
        self.widths = [m.out_features for m in self.modules]
        self.pack = pack and all(isinstance(m, nn.Linear) and can_pack(m.weight) for m in self.modules)
        self._source: tuple | None = None
        self._weight: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None

    def _fingerprint(self) -> tuple:
        # identity and in-place version of every source tensor: changes when a weight is swapped or updated
        tensors = [t for m in self.modules for t in (m.weight, m.bias) if t is not None]
        return tuple((id(t), t._version) for t in tensors)

    def _repack(self) -> None:
        with torch.no_grad():
            weight = torch.cat([m.weight.detach() for m in self.modules]) if len(self.modules) > 1 else None
            self._weight = torch.ops.mkldnn._reorder_linear_weight(
                weight if weight is not None else self.modules[0].weight.detach(), PACK_ROWS
            )
            if any(m.bias is not None for m in self.modules):
                self._bias = torch.cat(
                    [
                        m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.out_features)
                        for m in self.modules
                    ]
                )
            else:
                self._bias = None
        self._source = self._fingerprint()

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs side by side in one tensor (..., sum of the widths)."""
        if not self.pack or x.dtype != self.modules[0].weight.dtype:
            outputs = [m(x) for m in self.modules]
            return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        if self._source != self._fingerprint():
            self._repack()
        return torch.ops.mkldnn._linear_pointwise(x, self._weight, self._bias, "none", [], "")

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.pack or x.dtype != self.modules[0].weight.dtype:
            return [m(x) for m in self.modules]
        out = self.fused(x)
        return [out] if len(self.modules) == 1 else list(out.split(self.widths, dim=-1))


# MLP classes whose forward is exactly ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``.
SWIGLU_MLPS = ("MiniMindMLP", "Qwen3MLP", "Qwen2MLP", "LlamaMLP")


class GatedMLP:
    """A dense SwiGLU block with its gate and up projections fused."""

    def __init__(self, mlp: nn.Module, pack: bool = True):
        self.act = mlp.act_fn
        self.gate_up = Projection([mlp.gate_proj, mlp.up_proj], pack)
        self.down = Projection([mlp.down_proj], pack)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x)
        return self.down(self.act(gate) * up)[0]


def feed_forward(mlp: nn.Module, pack: bool = True):
    """The fused form of a dense SwiGLU block; any other block (MoE) is called as it is."""
    return GatedMLP(mlp, pack) if type(mlp).__name__ in SWIGLU_MLPS else mlp
