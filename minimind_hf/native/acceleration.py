"""How a native run uses the hardware: mixed precision, ``torch.compile``, CPU threads.

Each choice has an ``auto`` default decided by measurement (``benchmarks/time_to_loss.py`` prints the
figures):

- precision ``auto``: bf16 autocast (fp32 master weights and optimizer state) on GPUs that support bf16 *and*
  on CPUs with native bf16 instructions (x86 avx512_bf16 or AMX); fp32 elsewhere, where bf16 is emulated and
  slower. On a 2-core AMD EPYC (avx512_bf16) a training step of the quickstart's 1.7M model ran 1.55x faster
  in bf16, minimind3's 2.5x.
- compile ``auto``: ``torch.compile`` (inductor) of the training forward and backward for algorithms whose
  batches have one shape (packed pretrain / SFT rows), for dense models, when the run is long enough to repay
  the compilation (``COMPILE_MIN_STEPS``) and a compiler is there (a C++ compiler on the CPU, triton on CUDA).
  What is compiled: each decoder layer and the loss (`CompiledRegions`), not the whole model.
- threads ``0``: `ThreadTuner` picks the torch thread count while training, by timing steps (below).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "COMPILE_MIN_STEPS",
    "CompiledRegions",
    "ThreadTuner",
    "compiler_problem",
    "cpu_has_native_bf16",
    "resolve_compile",
    "resolve_precision",
]

# Compiling the 1.6M quickstart model's regions took 25 s on 2 cores from a cold inductor cache and cut a step
# of 16 x 340 tokens from 0.73 to 0.44 s: repaid after ~90 steps, so 200 leaves a margin for slower compilers.
COMPILE_MIN_STEPS = 200


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls in hardware (x86 avx512_bf16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(setting: str, device_type: str) -> str:
    """``mixed_precision`` -> what accelerate gets: ``bf16`` | ``fp16`` | ``no``."""
    if setting != "auto":
        return setting
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if device_type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "no"
    return "no"  # MPS, XPU, ...: fp32 unless asked


def _compiler_available(device_type: str) -> bool:
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    if device_type == "cpu":
        return any(shutil.which(cc) for cc in (os.environ.get("CXX", ""), "g++", "clang++", "c++") if cc)
    return False


def compiler_problem(device_type: str) -> str | None:
    """Why ``compile: true`` cannot run on `device_type`, or None."""
    if _compiler_available(device_type):
        return None
    need = "triton" if device_type == "cuda" else "a C++ compiler (g++ or clang++)"
    return f"compile: true needs {need} on {device_type}; install it or set compile: false"


def attention_problem(implementation: str, device_type: str) -> str | None:
    """Why ``attn_implementation`` cannot run here (unknown, or flash attention without CUDA / flash-attn),
    found before any data is read instead of when the model is built."""
    import importlib.util

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = implementation.split("|")[-1]  # "paged|sdpa" and friends
    if "/" in name:  # a kernel from the Hub (kernels-community/...): transformers resolves it
        return None
    valid = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if name not in valid:
        return f"attn_implementation: unknown {implementation!r}; valid: {', '.join(dict.fromkeys(valid))}"
    if name.startswith("flash_attention"):
        if device_type != "cuda":
            return f"attn_implementation {implementation!r} needs a CUDA GPU; on {device_type} use sdpa"
        package = "flash_attn_interface" if name == "flash_attention_3" else "flash_attn"
        if importlib.util.find_spec(package) is None:
            return (
                f"attn_implementation {implementation!r} needs the {package} package; install it or use sdpa"
            )
    return None


def resolve_compile(
    setting: bool | str, *, algo: Any, model: torch.nn.Module, total_steps: int, device_type: str
) -> bool:
    """``compile`` -> whether to compile; explains an ``auto`` that says no at debug level, and refuses an
    explicit ``true`` the machine cannot honour."""
    if setting is True:
        if (problem := compiler_problem(device_type)) is not None:
            raise RuntimeError(
                problem
            )  # TrainConfig.validate reports it before any work; this is for other callers
        return True
    if setting is False:
        return False
    reasons = []
    if not getattr(algo, "compile_friendly", False):
        reasons.append(f"{algo.name} batches change shape from step to step")
    if getattr(getattr(model, "config", None), "use_moe", False):
        reasons.append("MoE routing is data-dependent")
    if total_steps < COMPILE_MIN_STEPS:
        reasons.append(f"{total_steps} steps (< {COMPILE_MIN_STEPS}) do not repay the compilation")
    if not _compiler_available(device_type):
        reasons.append(f"no compiler for {device_type}")
    if reasons:
        logger.debug("compile auto: off (%s)", "; ".join(reasons))
        return False
    return True


class CompiledRegions:
    """``torch.compile`` of each decoder layer and of the loss function, swapped into the model only while a
    training forward runs (`active`).

    Why regions, not the whole model: the layers run the same code on the same shapes, so they share one
    compiled graph, and a cold compilation costs one layer's and the loss's instead of the whole model's (on
    2 cores, mostly the C++ compiler: the quickstart model 25 s instead of 41 s, minimind3 47 s instead of
    72 s; steps as fast). Why
    only while training: evaluation and generation run other shapes (each would compile again), and the model
    a run hands back must be the plain one. A model without a list of decoder layers is compiled whole.
    """

    def __init__(self, model: torch.nn.Module, **compile_kwargs: Any):
        self.model = model
        self.layers = _decoder_layers(model)
        self.whole = torch.compile(model, **compile_kwargs) if self.layers is None else None
        self.compiled_layers = [torch.compile(layer, **compile_kwargs) for layer in self.layers or ()]
        self.host = _loss_host(model) if self.layers is not None else None
        self.loss = None
        if self.host is not None:
            self.loss = torch.compile(self.host.loss_function, **compile_kwargs)

    def forward_model(self) -> torch.nn.Module:
        """What a training step calls (inside `active`): the whole compiled model, or the model itself."""
        return self.whole if self.whole is not None else self.model

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self.layers is None:
            yield
            return
        plain = list(self.layers)
        plain_loss = self.host.loss_function if self.host is not None else None
        for i, layer in enumerate(self.compiled_layers):
            self.layers[i] = layer
        if self.host is not None:
            self.host.loss_function = self.loss
        try:
            yield
        finally:
            for i, layer in enumerate(plain):
                self.layers[i] = layer
            if self.host is not None:
                self.host.loss_function = plain_loss


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's list of decoder layers (transformers' `GradientCheckpointingLayer`s), or None."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            if all(isinstance(layer, GradientCheckpointingLayer) for layer in module):
                return module
    return None


def _loss_host(model: torch.nn.Module) -> Any:
    """The transformers model whose `loss_function` the forward calls (under DDP or PEFT wrappers)."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)


class ThreadTuner:
    """Chooses torch's CPU thread count by timing training steps, and re-checks now and then.

    With ``num_threads: 0`` on the CPU the candidates are the cores this process may run on
    (``os.sched_getaffinity``), half of them and one. Each candidate runs ``trial_steps`` steps; the one with
    the lowest median time per token is kept until the next check, ``recheck_every`` steps later (the load of
    other processes changes). Why: OpenMP threads wait on each other, so when another process holds a core a
    2-thread step waits for the slow thread. Measured on 2 cores, quickstart model, one busy process beside
    it: 2 threads 0.86 s/step, 1 thread 0.57 (idle: 0.42 and 0.56). In fp32 eager the thread count did not
    change a step's arithmetic (checked bit for bit); in bf16 / compiled runs it can, so a resumed run is
    bit-exact only if the tuner picks the same count (set ``num_threads`` for strict reproducibility).
    """

    def __init__(
        self, requested: int, *, trial_steps: int = 3, recheck_every: int = 200, clock=time.perf_counter
    ):
        if requested <= 0 and os.environ.get("OMP_NUM_THREADS"):
            requested = torch.get_num_threads()  # the user (or torchrun, one per process) fixed it already
        self.fixed = requested > 0
        cores = _available_cores()
        self.candidates = [requested] if self.fixed else sorted({cores, max(1, cores // 2), 1}, reverse=True)
        self.trial_steps, self.recheck_every, self.clock = trial_steps, recheck_every, clock
        self.current = self.candidates[0]
        self.chosen: int | None = None
        self._times: dict[int, list[float]] = {}
        self._trial: list[int] = []  # candidates still to time in the running check (each trial_steps times)
        self._steps_since_check = 0
        self._t0 = 0.0
        torch.set_num_threads(self.current)
        if len(self.candidates) > 1:
            self._start_check()

    @property
    def active(self) -> bool:
        return len(self.candidates) > 1

    @property
    def in_trial(self) -> bool:
        """Whether the coming step times a candidate. The loop runs such steps on the eager model: compiled
        code is specialised to the thread count, so a trial of a new count would recompile it (~20 s)."""
        return bool(self._trial)

    def _start_check(self) -> None:
        self._times = {c: [] for c in self.candidates}
        self._trial = [c for c in self.candidates for _ in range(self.trial_steps)]
        self._steps_since_check = 0

    def before_step(self) -> None:
        if not self.active:
            return
        if self._trial:
            self.current = self._trial[0]
            torch.set_num_threads(self.current)
        self._t0 = self.clock()

    def after_step(self, tokens: int, *, warmup: bool = False) -> None:
        """Record the step just run (``warmup``: a step whose time says nothing, e.g. the compiling one)."""
        if not self.active:
            return
        seconds = self.clock() - self._t0
        if self._trial and not warmup:
            self._times[self._trial.pop(0)].append(seconds / max(tokens, 1))
            if not self._trial:
                self._decide()
        self._steps_since_check += 1
        if not self._trial and self._steps_since_check >= self.recheck_every:
            self._start_check()

    def _decide(self) -> None:
        medians = {c: sorted(t)[len(t) // 2] for c, t in self._times.items() if t}
        best = min(medians, key=medians.get)
        previous, self.chosen = self.chosen, best
        logger.log(
            logging.INFO if best != previous else logging.DEBUG,
            "threads: %d (per-token step time %s)",
            best,
            ", ".join(f"{c} threads {1e6 * s:.1f} us" for c, s in sorted(medians.items(), reverse=True)),
        )
        self.current = best
        torch.set_num_threads(best)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1
