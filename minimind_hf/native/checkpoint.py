"""Atomic, exactly-resumable training checkpoints.

Layout (one folder per checkpoint, the newest named in ``latest``)::

    output_dir/checkpoints/
        latest                      "step_000100" (written to a temp file, then os.replace'd)
        step_000100/
            model/                  a Hugging Face folder (safetensors + config + tokenizer + code)
            optimizer.pt            AdamW state (torch.save; loaded with weights_only=True)
            scheduler.json          schedule state (the optimizer-step counter)
            trainer_state.json      step, epoch, batches consumed in the epoch, tokens seen, config
            rng_rank{r}.json/.pt    python + numpy RNG (json), torch CPU/CUDA RNG (pt), one per process
            extra.pt                optional algorithm state (e.g. a reference model's running stats)

A checkpoint is written into ``.tmp_step_000100`` and renamed into place with `os.replace` only once
complete, so a crash (even SIGKILL) mid-write never leaves a half checkpoint where resume would look.
Older checkpoints beyond ``keep_last`` (0 = keep all) are deleted after the new one is in place; checkpoints of
later steps are never deleted in favour of an earlier one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_DIR",
    "capture_rng_state",
    "find_latest_checkpoint",
    "load_model_weights",
    "restore_rng_state",
    "write_atomic",
]

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file and `os.replace` (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


# ------------------------------------------------------------------------------------------- RNG
_RNG_DEVICES = ("cuda", "xpu", "npu", "mps")  # accelerator back-ends with their own generators


def _device_modules() -> list[tuple[str, object]]:
    out = []
    for name in _RNG_DEVICES:
        module = getattr(torch, name, None)
        if module is not None and getattr(module, "is_available", lambda: False)():
            out.append((name, module))
    return out


def capture_rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON-able python/numpy state, tensor state for torch CPU and every available accelerator)."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    js = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"torch": torch.get_rng_state()}
    for device, module in _device_modules():
        states = (
            module.get_rng_state_all() if hasattr(module, "get_rng_state_all") else [module.get_rng_state()]
        )
        for i, state in enumerate(states):
            tensors[f"{device}{i}"] = state
    return js, tensors


def restore_rng_state(js: dict, tensors: dict[str, torch.Tensor]) -> None:
    v, keys, gauss = js["python"]
    random.setstate((v, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    for device, module in _device_modules():
        states = [
            tensors[k]
            for k in sorted(k for k in tensors if k.startswith(device) and k[len(device) :].isdigit())
        ]
        if not states:
            continue
        if hasattr(module, "set_rng_state_all"):
            module.set_rng_state_all(states)
        else:
            module.set_rng_state(states[0])


# ------------------------------------------------------------------------------------- find/load
def find_latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint named by ``output_dir/checkpoints/latest``, or None."""
    root = Path(output_dir) / CHECKPOINT_DIR
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    if not (path / "trainer_state.json").is_file():
        logger.warning("%s names %s, which is incomplete; ignoring it", pointer, path)
        return None
    return path


def load_model_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Load ``model.safetensors`` (or sharded safetensors) from a HF folder into `model`, strictly
    except for tied weights that `save_pretrained` leaves out."""
    from safetensors.torch import load_file

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set()
    for k in missing:
        tied.add(k)
    params = dict(model.named_parameters(remove_duplicate=False))
    real_missing = []
    for k in tied:
        # a missing key is fine only if it shares storage with a loaded one (tied embeddings)
        if k in params and any(params[k] is params.get(o) for o in state):
            continue
        real_missing.append(k)
    if real_missing or unexpected:
        raise RuntimeError(
            f"checkpoint {folder} does not match the model: missing {real_missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    accelerator: Any,
    save_model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict,
    extra_state: dict | None = None,
    keep_last: int = 2,
) -> Path | None:
    """Write checkpoint `step` atomically (call on every process; returns the path on the main one)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / step_dir_name(step)
    tmp = root / f".tmp_{step_dir_name(step)}"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    js, tensors = capture_rng_state()
    (tmp / f"rng_rank{rank}.json").write_text(json.dumps(js), encoding="utf-8")
    torch.save(tensors, tmp / f"rng_rank{rank}.pt")
    if main:
        save_model(tmp / "model")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
        if extra_state:
            torch.save(extra_state, tmp / "extra.pt")
        (tmp / "trainer_state.json").write_text(
            json.dumps(trainer_state, indent=2, default=str), encoding="utf-8"
        )
    accelerator.wait_for_everyone()
    if not main:
        accelerator.wait_for_everyone()
        return None
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(root / LATEST, final.name)
    # keep the newest `keep_last` complete checkpoints up to this one (0 = keep all). Folders from later
    # steps (a run restarted from an earlier checkpoint) are never pruned in favour of this one.
    if keep_last > 0:
        older = sorted(
            (int(p.name[len("step_") :]), p)
            for p in root.glob("step_*")
            if p.is_dir() and p.name[len("step_") :].isdigit() and int(p.name[len("step_") :]) < step
        )
        older = [p for _, p in older]
        for old in older[: max(0, len(older) - (keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    logger.info("saved checkpoint %s", final)
    return final


def read_trainer_state(path: str | Path) -> dict:
    """The ``trainer_state.json`` of checkpoint `path` (step, epoch, tokens seen, stage, config)."""
    return json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))


def load_training_state(
    path: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int
) -> tuple[dict, dict | None]:
    """Restore optimizer and scheduler from checkpoint `path`; return (trainer_state, extra_state).

    RNG is restored separately (`restore_rng_state`), last, after everything that consumes randomness."""
    path = Path(path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
    state = read_trainer_state(path)
    extra = (
        torch.load(path / "extra.pt", map_location="cpu", weights_only=True)
        if (path / "extra.pt").exists()
        else None
    )
    return state, extra


def load_rng(path: str | Path, rank: int) -> tuple[dict, dict] | None:
    path = Path(path)
    js_file, pt_file = path / f"rng_rank{rank}.json", path / f"rng_rank{rank}.pt"
    if not js_file.exists():
        js_file, pt_file = path / "rng_rank0.json", path / "rng_rank0.pt"
        if not js_file.exists():
            return None
    return json.loads(js_file.read_text(encoding="utf-8")), torch.load(pt_file, weights_only=True)
