"""The stage registry behind `minimind-hf train <stage>`.

Each algorithm module registers itself at import time::

    register_stage("dpo", DPOConfig, run_dpo, help="direct preference optimisation")

where ``DPOConfig`` is a `TrainConfig` subclass (a flat dataclass: YAML keys = field names) and
``run_dpo(cfg) -> TrainResult``. `get_stage("dpo")` imports ``minimind_hf.native.dpo`` on demand, so the
CLI knows every stage listed in `STAGE_MODULES` without importing them all up front.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["STAGE_MODULES", "Stage", "available_stages", "get_stage", "register_stage"]

# stage name -> module that registers it (imported lazily)
STAGE_MODULES: dict[str, str] = {
    "pretrain": "minimind_hf.native.pretrain",
    "sft": "minimind_hf.native.sft",
    "lora": "minimind_hf.native.lora",
    "dpo": "minimind_hf.native.dpo",
    "ppo": "minimind_hf.native.ppo",
    "grpo": "minimind_hf.native.grpo",
    "agent": "minimind_hf.native.agent",
    "spo": "minimind_hf.native.spo",
    "distill": "minimind_hf.native.distill",
}


@dataclass
class Stage:
    name: str
    config_cls: type
    run: Callable[[Any], Any]
    help: str = ""


_REGISTRY: dict[str, Stage] = {}


def register_stage(name: str, config_cls: type, run: Callable[[Any], Any], help: str = "") -> Stage:
    """Make `name` available to `minimind-hf train` (call at module import time)."""
    stage = Stage(name, config_cls, run, help)
    _REGISTRY[name] = stage
    return stage


def _import(name: str) -> None:
    module = STAGE_MODULES.get(name)
    if module is not None and name not in _REGISTRY:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # the stage exists but something it imports is missing: say so
                raise
            logger.debug("stage %s: module %s not available", name, module)


def available_stages() -> list[str]:
    """Every stage that can run here (imports the known stage modules)."""
    for name in STAGE_MODULES:
        _import(name)
    return sorted(_REGISTRY)


def get_stage(name: str) -> Stage:
    _import(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown training stage {name!r}; available: {', '.join(available_stages())}")
    return _REGISTRY[name]
