"""PPO with a value model (critic), GAE and a KL penalty, through our native trainer (`minimind_hf.native.ppo`).

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
and a small `PPOTrainingArguments` for PPO's own keys, named as in trl's last ``PPOConfig`` (trl <= 1.13) where
it had them. A trl ``GRPOConfig`` would have brought num_generations / loss_type / scale_rewards, which mean
nothing here; a plain ``TrainingArguments`` subclass has no dead keys.

==================================  ================================================================
recipe key                          native key (minimind_hf.native.ppo.PPOConfig)
==================================  ================================================================
per_device_train_batch_size         batch_size (prompts = completions per micro-batch: one sample
                                    per prompt, the same "completions per process" meaning as trl's)
learning_rate                       learning_rate (actor)
critic_learning_rate                critic_learning_rate
max_completion_length               max_new_tokens
temperature, top_p                  same names
num_ppo_epochs (trl <= 1.13)        ppo_epochs (optimiser steps per rollout)
gamma, lam (trl <= 1.13)            gamma, lam
cliprange, cliprange_value          clip_range, clip_range_value
vf_coef, kl_coef (trl <= 1.13)      vf_coef, kl_coef
kl_mode                             kl_mode (loss: k3 KL in the loss, the original | reward: per-token
                                    penalty in the reward, as trl's old PPO)
whiten_advantages                   whiten_advantages
rewards, reward_options             rewards, reward_options
open_thinking, max_prompt_length    same names
max_records (recipe)                max_prompts
==================================  ================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.grpo import RLArguments, reward_options_dict, reward_problems
from minimind_hf.recipes.native_bridge import run_native
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
    num_ppo_epochs: int = field(default=2, metadata={"help": "optimiser steps per rollout"})
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


PPO_KEYS = {
    "critic_learning_rate",
    "max_completion_length",
    "temperature",
    "top_p",
    "num_ppo_epochs",
    "gamma",
    "lam",
    "cliprange",
    "cliprange_value",
    "vf_coef",
    "kl_coef",
    "kl_mode",
    "whiten_advantages",
}


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None) -> None:
    rl_args = rl_args or RLArguments()
    common.prepare_runtime(recipe_args)
    problems = reward_problems(rl_args)
    if recipe_args.backend == "trl":
        problems.insert(0, NO_TRL)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model="PPO starts from an SFT folder (actor, critic backbone and reference start there)",
    )
    t = training_args
    keys = {
        "rewards": list(rl_args.rewards),
        "reward_options": reward_options_dict(rl_args),
        "open_thinking": rl_args.open_thinking,
        "max_prompts": recipe_args.max_records,
        "critic_learning_rate": t.critic_learning_rate,
        "max_new_tokens": t.max_completion_length,
        "temperature": t.temperature,
        "top_p": t.top_p,
        "ppo_epochs": t.num_ppo_epochs,
        "gamma": t.gamma,
        "lam": t.lam,
        "clip_range": t.cliprange,
        "clip_range_value": t.cliprange_value,
        "vf_coef": t.vf_coef,
        "kl_coef": t.kl_coef,
        "kl_mode": t.kl_mode,
        "whiten_advantages": t.whiten_advantages,
    }
    if rl_args.max_prompt_length:
        keys["max_prompt_length"] = rl_args.max_prompt_length
    run_native("ppo", recipe_args, training_args, model_args, keys, stage_mapped=PPO_KEYS)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, PPOTrainingArguments, trl ModelConfig, RLArguments) from ``--config FILE`` and flags."""
    return common.parse_recipe(PPOTrainingArguments, argv, extra_dataclasses=(RLArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
