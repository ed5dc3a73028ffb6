"""The optimizer of a native run: AdamW, or Muon for the hidden matrices with AdamW for the rest.

``optimizer: adamw`` (the default) is torch's AdamW over the algorithm's param groups, fused where torch has a
fused kernel for the device (one kernel per step instead of a loop over tensors; the update is the same).

``optimizer: muon`` is the split modded-nanogpt, nanochat and Moonlight use: `torch.optim.Muon` (momentum,
then Newton-Schulz orthogonalisation of each update) for the 2-D weight matrices inside the transformer
blocks (q/k/v/o and gate/up/down projections), AdamW for everything else (embeddings and the tied lm_head,
norms, biases, the MoE router, fused 3-D MoE experts, LoRA factors, value heads). Its hyper-parameters:

- ``muon_lr`` 0.02 with ``muon_adjust_lr: original`` (the defaults): Keller Jordan's scaling
  ``sqrt(max(1, rows / cols))`` and the rate modded-nanogpt and nanochat use. An orthogonalised update has
  entries of RMS ~1/sqrt(width), so this rate shrinks with the width by itself (at hidden 128 it moves weights
  like AdamW at ~9e-3, at minimind3's 768 like ~3.6e-3). ``match_rms_adamw`` is Moonshot's
  ``0.2 * sqrt(max(rows, cols))``, which gives the updates AdamW's RMS, so ``muon_lr`` = ``learning_rate``
  fits; measured on the quickstart model (``benchmarks/time_to_loss.py --arms ours-muon@LR``, RMS-matched LR):
  5e-4 (AdamW's rate) learned *slower* than AdamW, 2e-3 a little faster, 5e-3 and 1e-2 fastest (alike).
- ``muon_momentum`` (0.95, Nesterov) and ``muon_ns_steps`` (5 Newton-Schulz iterations).
- weight decay: ``weight_decay`` on the Muon matrices, as on AdamW's.

Both halves follow the same learning-rate schedule (the schedule scales every group's ``base_lr``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["OPTIMIZERS", "MUON_ADJUST_LR", "MuonWithAdamW", "build_optimizer", "is_muon_matrix"]

OPTIMIZERS = ("adamw", "muon")
MUON_ADJUST_LR = ("match_rms_adamw", "original")

# Parameters that stay with AdamW even when 2-D: token embeddings / lm_head (a lookup table, not a linear map
# of hidden states), the MoE router (a handful of rows), LoRA factors and value/score heads.
_ADAMW_ONLY = ("embed", "lm_head", "mlp.gate.", "lora_", "score", "value_head", "v_head")


def is_muon_matrix(name: str, param: torch.Tensor) -> bool:
    """Whether Muon updates `param`: a 2-D weight matrix inside the transformer blocks."""
    return param.ndim == 2 and min(param.shape) > 1 and not any(part in name for part in _ADAMW_ONLY)


class MuonWithAdamW(torch.optim.Optimizer):
    """Two optimizers stepped as one: `param_groups` is Muon's groups then AdamW's (the very same dicts, so a
    schedule that sets ``group["lr"]`` reaches both); `state_dict` holds both states."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.muon, self.adamw = muon, adamw
        super().__init__(muon.param_groups + adamw.param_groups, {})
        # Optimizer.__init__ appended the inner optimizers' group dicts themselves; keep exactly those
        self.param_groups = muon.param_groups + adamw.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError(
                "the checkpoint's optimizer state is not a Muon + AdamW state "
                "(was it saved with optimizer: adamw?)"
            )
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups


def _fused_ok(groups: list[dict]) -> bool:
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_optimizer(cfg: Any, groups: list[dict], model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, over `groups` (the algorithm's param groups; a group may carry
    its own ``lr``). Call after the model is on its device (fused kernels need the parameters where they
    train)."""
    adam_kwargs = dict(
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, fused=_fused_ok(groups) or None, **adam_kwargs)

    names = {id(p): n for n, p in model.named_parameters()}
    muon_lr = cfg.muon_lr
    muon_groups, adam_groups = [], []
    for group in groups:
        matrices = [p for p in group["params"] if is_muon_matrix(names.get(id(p), ""), p)]
        rest = [p for p in group["params"] if not is_muon_matrix(names.get(id(p), ""), p)]
        settings = {k: v for k, v in group.items() if k != "params"}
        if matrices:
            # a group's own lr (e.g. PPO's critic) is scaled by the same muon_lr / learning_rate ratio
            lr = settings.get("lr", cfg.learning_rate) * muon_lr / cfg.learning_rate
            wd = settings.get("weight_decay", cfg.weight_decay)
            muon_groups.append({"params": matrices, "lr": lr, "weight_decay": wd})
        if rest:
            adam_groups.append({"params": rest, **settings})
    if not muon_groups:
        raise ValueError("optimizer: muon found no 2-D hidden weight matrices to train; use optimizer: adamw")
    muon = torch.optim.Muon(
        muon_groups,
        lr=muon_lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.muon_momentum,
        nesterov=True,
        ns_steps=cfg.muon_ns_steps,
        adjust_lr_fn=cfg.muon_adjust_lr,
    )
    if not adam_groups:
        return muon
    adamw = torch.optim.AdamW(adam_groups, fused=_fused_ok(adam_groups) or None, **adam_kwargs)
    n_muon = sum(p.numel() for g in muon_groups for p in g["params"])
    n_adam = sum(p.numel() for g in adam_groups for p in g["params"])
    logger.info("optimizer: Muon on %d matrices (%.2fM params), AdamW on the rest (%.2fM)",
                sum(len(g["params"]) for g in muon_groups), n_muon / 1e6, n_adam / 1e6)  # fmt: skip
    return MuonWithAdamW(muon, adamw)
