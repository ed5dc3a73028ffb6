"""PPO with a value model (critic), GAE and a KL penalty, through our native trainer
(`minimind_hf.native.ppo`).

    accelerate launch recipes/ppo.py --config recipes/configs/tiny/ppo.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml recipes/ppo.py \\
        --config recipes/configs/tiny/ppo.yaml
    accelerate launch -m minimind_hf.recipes.ppo --config ...          # after pip install

trl removed its ``PPOTrainer`` in 1.14 (this project does not pin an old trl), so PPO is native only:
``backend: trl`` is an error that points to grpo.py / rloo.py, the library-backed on-policy recipes.

Vocabulary. The YAML keeps the other recipes' words: transformers ``TrainingArguments`` for the loop
(learning_rate, per_device_train_batch_size, gradient_accumulation_steps, max_steps, logging_steps,
save_steps, bf16...; translated by `native_bridge` like every native run), `RLArguments` for the prompts and
rewards (``rewards``, ``reward_options``, ``open_thinking``, ``max_prompt_length``, as in grpo.py/rloo.py),
and a small `PPOTrainingArguments` for PPO's own keys, named as in trl's last ``PPOConfig`` (trl <= 1.13)
where it had them. A trl ``GRPOConfig`` would have brought num_generations / loss_type / scale_rewards, which
mean nothing here; a plain ``TrainingArguments`` subclass has no dead keys.

The translation to the native PPOConfig is the ``PPO`` table in ``recipes/native_bridge.py`` (shown in
recipes/README.md): ``per_device_train_batch_size`` = prompts = completions per micro-batch (one sample per
prompt), ``num_ppo_epochs`` -> ``ppo_epochs``, ``cliprange`` -> ``clip_range``, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.rl_shared import RLArguments, run_native_only
from transformers import TrainingArguments

NO_TRL = (
    "backend trl: trl 1.16 has no PPO trainer (removed in trl 1.14). Run this recipe with backend: native "
    "(our PPO), or use recipes/grpo.py (GRPOTrainer) or recipes/rloo.py (RLOOTrainer) for a trl-backed "
    "on-policy run"
)


@dataclass
class PPOTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments + PPO's keys (defaults: the original MiniMind's)."""

    learning_rate: float = field(default=3e-7, metadata={"help": "actor learning rate (the original's 3e-7)"})
    critic_learning_rate: float = field(default=5e-7, metadata={"help": "value model learning rate"})
    max_completion_length: int = field(default=256, metadata={"help": "new tokens sampled per completion"})
    temperature: float = field(
        default=1.0, metadata={"help": "sampling temperature (also used for log-probs)"}
    )
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    num_ppo_epochs: int = field(default=2, metadata={"help": "passes over each rollout"})
    mini_batch_size: int = field(
        default=0,
        metadata={
            "help": "rows per optimiser step within a pass, reshuffled each pass (the original's "
            "mini_batch_size); 0 = the whole micro-batch"
        },
    )
    early_stop_kl: float = field(
        default=0.0,
        metadata={
            "help": "end a rollout's passes once a mini-batch's approx KL to the sampling policy exceeds "
            "this (the original's 0.25); 0 = never"
        },
    )
    gamma: float = field(default=1.0, metadata={"help": "GAE discount"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip"})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clip"})
    vf_coef: float = field(default=0.5, metadata={"help": "value loss coefficient"})
    kl_coef: float = field(default=0.02, metadata={"help": "KL coefficient (the original's 0.02)"})
    kl_mode: str = field(
        default="loss",
        metadata={
            "help": "loss: k3 KL added to the loss (the original) | reward: per-token penalty in the reward"
        },
    )
    whiten_advantages: bool = field(default=True, metadata={"help": "whiten advantages over each rollout"})


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None) -> None:
    run_native_only(
        "ppo",
        NO_TRL,
        "PPO starts from an SFT folder (actor, critic backbone and reference start there)",
        recipe_args,
        training_args,
        model_args,
        rl_args or RLArguments(),
    )


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, PPOTrainingArguments, trl ModelConfig, RLArguments) from ``--config FILE`` and
    flags."""
    return common.parse_recipe(PPOTrainingArguments, argv, extra_dataclasses=(RLArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
