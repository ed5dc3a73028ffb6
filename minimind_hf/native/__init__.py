"""Native reference trainers: one readable file per algorithm and one shared training loop.

- `loop`: `TrainConfig`, `Algorithm` (the hooks an algorithm overrides), `train(cfg, algo)`. Read its
  docstring first: it explains how an algorithm plugs in.
- `pretrain`, `sft` (and `dpo`, `grpo`, `ppo`, `distill`, `lora`): one stage each, each registering itself
  with `stages.register_stage`. Users reach them through the recipe YAMLs (`minimind-hf train <stage>
  --config RECIPE.yaml`, translated by `minimind_hf.recipes.native_bridge`); the stage dataclasses are the
  Python API underneath.
- `config` (dict/YAML -> validated stage dataclass), `schedule` (warmup + cosine), `checkpoint` (atomic,
  exact resume).
"""

from .loop import Algorithm, TrainConfig, TrainResult, train

__all__ = ["Algorithm", "TrainConfig", "TrainResult", "train"]
