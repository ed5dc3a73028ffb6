"""Which rows each optimizer step trains on, and the reuse of prepared batches over several steps.

Each epoch is a permutation of the training rows seeded with ``seed + epoch``; every *draw* takes the next
``batch_size * grad_accum_steps * world_size`` rows (the incomplete tail of an epoch is skipped), and this
process's ``grad_accum_steps`` micro-batches of them go through ``algo.prepare_batch`` (for RL: the rollout).

An algorithm may train on one draw for several optimizer steps (GRPO ``num_iterations``, PPO ``ppo_epochs`` x
mini-batches): ``algo.batch_uses`` steps, the ``u``-th on ``algo.select(batch, u)``. A selection of None skips
that micro-batch (PPO's early stop on KL); when every micro-batch of a use is skipped, the window ends and the
next step draws new rows. So no drawn row goes unused, and the data position is the number of draws, which is
checkpointed, with the window in progress, so that a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["BatchStream", "to_device"]


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], torch.Tensor):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


class BatchStream:
    """The micro-batches of each optimizer step of one process (see the module docstring)."""

    def __init__(
        self, algo, *, batch_size: int, grad_accum_steps: int, world: int, rank: int, seed: int, device
    ):
        self.algo, self.device = algo, device
        self.batch_size, self.grad_accum_steps = batch_size, grad_accum_steps
        self.world, self.rank, self.seed = world, rank, seed
        self.global_batch = batch_size * grad_accum_steps * world
        self.draws_per_epoch = len(algo.train_dataset) // self.global_batch
        self.uses = max(1, int(getattr(algo, "batch_uses", 1)))
        self.draws = 0  # draws made so far: the data position
        self.window: list | None = None  # the prepared micro-batches of the current draw
        self.use = 0  # uses of the window made so far
        self._perm_epoch, self._perm = -1, None

    @property
    def epoch(self) -> int:
        """The epoch of the rows being trained on."""
        return max(self.draws - 1, 0) // self.draws_per_epoch

    def next_step(self, prepare: Callable[[Any], Any]) -> list:
        """This step's micro-batches (None for a skipped one). `prepare(rows_batch)` runs
        ``prepare_batch``."""
        if self.window is not None:
            micro = self._next_use()
            if micro is not None:
                return micro
        self.window, self.use = [prepare(b) for b in self._draw()], 0
        micro = self._next_use()
        if micro is None:
            raise RuntimeError(f"{self.algo.name}: select() skipped every micro-batch of a new draw")
        return micro

    def _next_use(self) -> list | None:
        while self.use < self.uses:
            micro = [self.algo.select(b, self.use) for b in self.window]
            self.use += 1
            if any(m is not None for m in micro):
                return micro
        self.window = None
        return None

    def _draw(self) -> list:
        epoch, k = divmod(self.draws, self.draws_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm, self._perm_epoch = (
                torch.randperm(len(self.algo.train_dataset), generator=g).tolist(),
                epoch,
            )
        rows = self._perm[k * self.global_batch : (k + 1) * self.global_batch]
        self.draws += 1
        dataset, batches = self.algo.train_dataset, []
        for m in range(self.grad_accum_steps):
            lo = (m * self.world + self.rank) * self.batch_size
            batch = self.algo.collate_fn([dataset[i] for i in rows[lo : lo + self.batch_size]])
            batches.append(to_device(batch, self.device))
        return batches

    # ----- checkpointing: the draw count (every process alike) and this process's window in progress
    def position(self) -> dict:
        epoch, in_epoch = divmod(self.draws, self.draws_per_epoch)
        return {"draws": self.draws, "epoch": epoch, "batches_in_epoch": in_epoch}

    def window_state(self) -> dict | None:
        if self.window is None or self.use >= self.uses:
            return None
        return {"window": to_device(self.window, torch.device("cpu")), "use": self.use}

    def restore(self, trainer_state: dict, window_state: dict | None) -> None:
        # checkpoints written before draws were counted: one draw per step
        self.draws = int(trainer_state.get("draws", trainer_state.get("step", 0)))
        if window_state is not None:
            self.window = to_device(window_state["window"], self.device)
            self.use = int(window_state["use"])
