"""Native reference trainers: one readable file per algorithm and one shared training loop.

- `loop`: `TrainConfig`, `Algorithm` (the hooks an algorithm overrides), `train(cfg, algo)`. Read its
  docstring first: it explains how an algorithm plugs in.
- `pretrain`, `sft` (and `dpo`, `grpo`, `ppo`, `distill`, `lora`): one stage each, each registering itself
  with `stages.register_stage` so `minimind-hf train <stage> --config FILE [key=value ...]` finds it.
- `config` (YAML/JSON -> validated dataclass), `schedule` (warmup + cosine), `checkpoint` (atomic,
  exact resume), `cli` (the `train` command).
"""

from .loop import Algorithm, TrainConfig, TrainResult, train

__all__ = ["Algorithm", "TrainConfig", "TrainResult", "train"]
