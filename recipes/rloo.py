"""REINFORCE Leave-One-Out (Ahmadian et al. 2024) with rule rewards, through trl's ``RLOOTrainer``.

    accelerate launch recipes/rloo.py --config recipes/configs/tiny/rloo.yaml
    accelerate launch -m minimind_hf.recipes.rloo --config ...          # after pip install

A second library-backed on-policy option beside GRPO, with the same data (`load_split("rl", ...)`: ``prompt``
messages + ``ground_truth``), the same reward keys (``rewards``, ``reward_options`` from
`minimind_hf.recipes.rl_shared.RLArguments`, trl's ``reward_weights``) and the same batch semantics
(``per_device_train_batch_size`` counts completions; ``num_generations`` completions per prompt). The
advantage of a completion is its reward minus the mean reward of the *other* completions of its prompt
(no std scaling unless ``normalize_advantages``); trl adds the KL to the reference as a reward penalty
(``beta``, default 0.05).

There is no native RLOO: ``backend: native`` is an error pointing to grpo.py / ppo.py, the native on-policy
trainers (GRPO with ``scale_rewards: none`` is the closest: mean-centred group advantages).
"""

from __future__ import annotations

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import trl_refusals
from minimind_hf.recipes.rl_shared import RLArguments, open_thinking, reward_problems, run_trl

NO_NATIVE = (
    "backend native: there is no native RLOO trainer. Use recipes/grpo.py (closest: scale_rewards: none, "
    "mean-centred group advantages) or recipes/ppo.py with --backend native, or keep backend: trl here"
)


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None) -> None:
    rl_args = rl_args or RLArguments()
    common.prepare_runtime(recipe_args)
    problems = reward_problems(rl_args, training_args.reward_weights)
    if recipe_args.backend == "native":
        problems.insert(0, NO_NATIVE)
    else:
        problems += trl_refusals("rloo", rl_args)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model="RLOO starts from an SFT folder (e.g. the sft recipe's output_dir)",
    )

    if common.dry_run(recipe_args, training_args, model_args):
        return
    from trl import RLOOTrainer

    run_trl(
        RLOOTrainer, recipe_args, training_args, model_args, rl_args, open_thinking(rl_args, training_args)
    )


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl RLOOConfig, trl ModelConfig, RLArguments) from ``--config FILE`` and
    ``--key value``."""
    from trl import RLOOConfig

    return common.parse_recipe(RLOOConfig, argv, extra_dataclasses=(RLArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
