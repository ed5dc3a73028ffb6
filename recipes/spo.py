"""SPO (single-stream policy optimisation): one sample per prompt, a per-prompt Beta value tracker as the
baseline, prompts drawn by priority (`minimind_hf.native.spo`; the formulas are in its docstring).

    accelerate launch recipes/spo.py --config recipes/configs/tiny/spo.yaml
    minimind-hf train spo --config recipes/configs/tiny/spo.yaml
    accelerate launch -m minimind_hf.recipes.spo --config ...          # after pip install

The GRPO recipe's YAML (trl's ``GRPOConfig`` + `RLArguments`) with ``num_generations: 1`` and the tracker's
keys (`SPOArguments`). trl has no SPO trainer, so this recipe is native only (``backend: trl`` is an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native
from minimind_hf.recipes.rl_shared import RLArguments, reward_problems

NO_TRL = "backend trl: trl has no SPO trainer; SPO runs on the native backend (backend: native)"


@dataclass
class SPOArguments:
    """The value tracker's keys (see minimind_hf.native.spo)."""

    reward_low: float = field(default=0.0, metadata={"help": "the summed rewards' lowest value (maps to 0)"})
    reward_high: float = field(
        default=1.0, metadata={"help": "the summed rewards' highest value (maps to 1)"}
    )
    d_half: float = field(
        default=0.06, metadata={"help": "log-prob change that halves the old estimate's weight"}
    )
    rho_min: float = field(default=0.5, metadata={"help": "the strongest forgetting per visit"})
    rho_max: float = field(
        default=0.96, metadata={"help": "the weakest forgetting per visit (and a first visit's)"}
    )
    priority_eps: float = field(default=0.05, metadata={"help": "floor of a prompt's sampling weight"})


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None, spo_args=None) -> None:
    rl_args, spo_args = rl_args or RLArguments(), spo_args or SPOArguments()
    common.prepare_runtime(recipe_args)
    problems = reward_problems(rl_args, training_args.reward_weights)
    if recipe_args.backend == "trl":
        problems.insert(0, NO_TRL)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model="SPO starts from an SFT folder (e.g. the sft recipe's output_dir)",
        stage="spo",
        stage_args=(rl_args, spo_args),
    )
    run_native("spo", recipe_args, training_args, model_args, rl_args, spo_args)


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl GRPOConfig, trl ModelConfig, RLArguments, SPOArguments) from ``--config`` and flags."""
    from trl import GRPOConfig

    return common.parse_recipe(GRPOConfig, argv, extra_dataclasses=(RLArguments, SPOArguments))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
