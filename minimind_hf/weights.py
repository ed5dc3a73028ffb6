"""Reading the weights of a Hugging Face model folder: the one reader the converters and the trainers
share."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

__all__ = ["read_weights"]


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All weights of a model folder: sharded safetensors (by their index), ``model.safetensors``, or a legacy
    ``pytorch_model.bin`` (``weights_only``). Other files beside them (PPO's ``value_model.safetensors``) are
    not read. Raises FileNotFoundError naming the folder when it holds none."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(folder / shard))  # torch loader: bf16 works (safetensors.numpy cannot)
        return state
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no model.safetensors (or sharded index / pytorch_model.bin) found")
