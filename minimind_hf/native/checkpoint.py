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
            batches_rank{r}.pt      optional: a process's prepared batches still in use (a reused rollout)
            manifest.json           size and sha256 of every file above (written last)

A checkpoint is written into ``.tmp_step_000100``, fsynced, and renamed into place with `os.replace` only
once complete, so a crash (even SIGKILL, or power loss) mid-write never leaves a half checkpoint where resume
would look. Older checkpoints beyond ``keep_last`` (0 = keep all) are deleted after the new one is in place
and ``latest`` names it; checkpoints of later steps are never deleted in favour of an earlier one.

On resume, `find_latest_checkpoint` checks the checkpoint ``latest`` names against its manifest; a damaged
or missing one falls back, with a warning, to the newest earlier checkpoint that checks out, and a folder
whose checkpoints are all damaged is an error (never a silent restart from step 0).
"""

from __future__ import annotations

import errno
import hashlib
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
    "CheckpointError",
    "capture_rng_state",
    "find_latest_checkpoint",
    "load_model_weights",
    "restore_rng_state",
    "write_atomic",
]

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
# what every complete checkpoint holds, also those written before manifests existed
_REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.json")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or none of a run's checkpoints can be resumed; says what to do."""


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file and `os.replace` (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def _step_of(path: Path) -> int | None:
    digits = path.name[len("step_") :]
    return int(digits) if path.name.startswith("step_") and digits.isdigit() else None


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
    """The checkpoint to resume in `output_dir`: the one ``latest`` names if it checks out, else (loudly) the
    newest earlier one that does. None when the folder has no checkpoints.

    Raises:
        CheckpointError: checkpoints exist but none is complete and intact.
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    folders = sorted(
        ((step, p) for p in root.glob("step_*") if p.is_dir() and (step := _step_of(p)) is not None),
        reverse=True,
    )
    pointer = root / LATEST
    named = root / pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else None
    if named is None and not folders:
        return None
    # after `latest`, only earlier steps: later folders belong to a run that was restarted from before them
    limit = _step_of(named) if named is not None else None
    candidates = ([named] if named is not None else []) + [
        p for step, p in folders if p != named and (limit is None or step < limit)
    ]
    problems = []
    for path in candidates:
        problem = verify_checkpoint(path)
        if problem is None:
            if problems:
                logger.warning(
                    "checkpoint %s cannot be resumed (%s); resuming from %s instead",
                    problems[0][0],
                    problems[0][1],
                    path,
                )
            return path
        problems.append((path, problem))
    listed = "; ".join(f"{p.name}: {why}" for p, why in problems)
    raise CheckpointError(
        f"{root} holds no checkpoint that can be resumed ({listed}). Use resume=never (in a recipe: "
        "resume_from_checkpoint: false) to train from scratch (its checkpoints are replaced), "
        "or a new output_dir"
    )


def verify_checkpoint(path: str | Path) -> str | None:
    """What is wrong with checkpoint folder `path` (missing, incomplete, a file whose size or sha256 differs
    from its manifest), or None if it can be resumed."""
    path = Path(path)
    if not path.is_dir():
        return "missing"
    for name in _REQUIRED:
        if not (path / name).is_file():
            return f"no {name}"
    if not list((path / "model").glob("*.safetensors")):
        return "no model weights"
    manifest = path / MANIFEST
    if not manifest.is_file():  # written before manifests existed: the files above are all we can check
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            return f"trainer_state.json unreadable ({err})"
        return None
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} unreadable ({err})"
    for rel, (size, digest) in expected.items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, the manifest says {size}"
        if _sha256(f) != digest:
            return f"{rel} is damaged (sha256 differs from the manifest)"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _seal(folder: Path) -> None:
    """fsync every file of a finished checkpoint folder and record its manifest (sizes + sha256), last."""
    files = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
        files[f.relative_to(folder).as_posix()] = [f.stat().st_size, _sha256(f)]
    write_atomic(folder / MANIFEST, json.dumps({"files": files}, indent=1))
    for d in sorted({p.parent for p in folder.rglob("*")} | {folder}):
        _fsync_dir(d)


def load_model_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Load a HF folder's weights (`minimind_hf.weights.read_weights`) into `model`, strictly except for tied
    weights that `save_pretrained` leaves out."""
    from ..weights import read_weights

    folder = Path(folder)
    state = read_weights(folder)
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
    rank_state: dict | None = None,
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
    try:
        js, tensors = capture_rng_state()
        (tmp / f"rng_rank{rank}.json").write_text(json.dumps(js), encoding="utf-8")
        torch.save(tensors, tmp / f"rng_rank{rank}.pt")
        if rank_state:  # this process's own batches in progress (e.g. a rollout reused for more steps)
            torch.save(rank_state, tmp / f"batches_rank{rank}.pt")
        if main:
            save_model(tmp / "model")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
            if extra_state:
                torch.save(extra_state, tmp / "extra.pt")
            (tmp / "trainer_state.json").write_text(
                json.dumps(trainer_state, indent=2, default=str), encoding="utf-8"
            )
    except (OSError, RuntimeError) as err:
        raise _write_failure(err, tmp) from err
    accelerator.wait_for_everyone()
    if not main:
        accelerator.wait_for_everyone()
        return None
    try:
        _seal(tmp)
    except OSError as err:
        raise _write_failure(err, tmp) from err
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(root / LATEST, final.name)
    _prune(root, step, keep_last)
    accelerator.wait_for_everyone()
    logger.info("saved checkpoint %s", final)
    return final


def _prune(root: Path, step: int, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints up to `step`, the one just written included (0 = keep all).
    Folders of later steps (a run restarted from an earlier checkpoint) are never pruned in favour of it."""
    if keep_last <= 0:
        return
    older = sorted(
        (s, p) for p in root.glob("step_*") if p.is_dir() and (s := _step_of(p)) is not None and s < step
    )
    for _, old in older[: max(0, len(older) - (keep_last - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def _write_failure(err: BaseException, tmp: Path) -> BaseException:
    """A failed checkpoint write as one clear error: the partial folder is removed (it would only take the
    space a retry needs) and a full disk is named as such; torch.save reports one as 'unexpected pos' or
    'file write failed'."""
    shutil.rmtree(tmp, ignore_errors=True)
    text = str(err)
    full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or (
        isinstance(err, RuntimeError) and ("unexpected pos" in text or "write failed" in text)
    )
    if full:
        free = shutil.disk_usage(tmp.parent).free / 2**20
        return OSError(
            errno.ENOSPC,
            f"no space left on device writing checkpoint {tmp.name[len('.tmp_') :]} ({free:.0f} MiB free); "
            "free some space (or set keep_last lower, or output_dir on a larger disk) and run the same "
            "command to resume from the last complete checkpoint",
            str(tmp.parent),
        )
    if isinstance(err, OSError):
        return err
    return CheckpointError(f"could not write checkpoint {tmp.name[len('.tmp_') :]} in {tmp.parent}: {text}")


def read_trainer_state(path: str | Path) -> dict:
    """The ``trainer_state.json`` of checkpoint `path` (step, epoch, tokens seen, stage, config)."""
    return json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))


def load_training_state(
    path: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any
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


def load_rank_state(path: str | Path, rank: int) -> dict | None:
    """This process's ``rank_state`` saved with checkpoint `path`, or None."""
    file = Path(path) / f"batches_rank{rank}.pt"
    return torch.load(file, map_location="cpu", weights_only=True) if file.exists() else None


def load_rng(path: str | Path, rank: int) -> tuple[dict, dict] | None:
    path = Path(path)
    js_file, pt_file = path / f"rng_rank{rank}.json", path / f"rng_rank{rank}.pt"
    if not js_file.exists():
        js_file, pt_file = path / "rng_rank0.json", path / "rng_rank0.pt"
        if not js_file.exists():
            return None
    return json.loads(js_file.read_text(encoding="utf-8")), torch.load(pt_file, weights_only=True)
