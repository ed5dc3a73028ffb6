"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio * lr``.

    lr(t) = lr * t / warmup                                            for t < warmup
    lr(t) = lr * (r + (1 - r) * 0.5 * (1 + cos(pi * p)))                p = (t - warmup) / (T - warmup)

with ``r = min_lr_ratio``. MiniMind's own schedule, ``lr * (0.1 + 0.45 * (1 + cos(pi t / T)))``, is the
special case ``warmup=0, r=0.1``. `t` counts optimizer steps; the schedule is a pure function of it, so
restoring the step on resume restores the schedule exactly. This is transformers'
``get_cosine_with_min_lr_schedule_with_warmup`` (step 0 of a warmup has lr 0), so both backends agree.
"""

from __future__ import annotations

import math

import torch

__all__ = ["CosineSchedule", "lr_at"]


def lr_at(
    step: int, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1
) -> float:
    """The learning rate for optimizer step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * step / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay))
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class CosineSchedule:
    """Sets every param group's lr from `lr_at`; each group may carry its own ``base_lr`` (default:
    the optimizer's)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
    ):
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.step_count = 0
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self._apply()

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(
                self.step_count, group["base_lr"], self.total_steps, self.warmup_steps, self.min_lr_ratio
            )

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "min_lr_ratio": self.min_lr_ratio,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
