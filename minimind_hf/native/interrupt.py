"""Ctrl-C (SIGINT) and SIGTERM during training: finish the step, save a checkpoint, stop with one line.

A signal that lands mid-step (between backward and the optimizer step) would leave nothing consistent to
save, so the handler only records the request; the loop asks `GracefulStop.requested` after each optimizer
step, saves, and raises `TrainingInterrupted`, which the CLI prints as one line. A second Ctrl-C stops at
once (a plain KeyboardInterrupt), for when the step itself hangs.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["GracefulStop", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request after a complete step; `checkpoint` is where it was saved (or None)."""

    def __init__(self, step: int, total_steps: int, checkpoint: str | None, signal_name: str):
        self.step, self.total_steps, self.checkpoint, self.signal_name = (
            step,
            total_steps,
            checkpoint,
            signal_name,
        )
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint saved"
        super().__init__(
            f"{signal_name} at step {step} of {total_steps}: {where}; run the same command again to resume"
        )


class GracefulStop:
    """Context manager: while active, SIGINT / SIGTERM ask the loop to stop after the current step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signal_name = signal.Signals(signum).name
        logger.warning(
            "%s received: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)",
            self.signal_name,
        )

    def requested(self, accelerator: Any) -> bool:
        """True once any process was signalled (all processes agree, so they save and stop together)."""
        wanted = self.signal_name is not None
        if accelerator.num_processes > 1:
            flag = torch.tensor(float(wanted), device=accelerator.device)
            wanted = bool(accelerator.reduce(flag, "sum").item() > 0)
            if wanted and self.signal_name is None:
                self.signal_name = "stop requested by another process"
        return wanted
