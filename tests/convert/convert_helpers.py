"""Helpers shared by the converter tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import math

import torch

from minimind_hf import MiniMindConfig, MiniMindForCausalLM


def train_tiny(
    config: MiniMindConfig, rows: torch.Tensor, steps: int = 200, batch: int = 8, lr: float = 5e-3
):
    """A few seconds of plain AdamW with cosine decay; returns the model in eval mode and its last loss."""
    torch.manual_seed(0)
    model = MiniMindForCausalLM(config)
    # Non-trivial norm weights, so the q/k norm and final norm really matter in every exported format.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.8, 1.2)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    model.train()
    loss = None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        idx = torch.randint(0, rows.shape[0], (batch,), generator=gen)
        loss = model(input_ids=rows[idx], labels=rows[idx]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model.eval(), loss.item()


def load_minimind(folder) -> MiniMindForCausalLM:
    return MiniMindForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()
