"""SPO (single-stream policy optimisation): one sample per prompt, a per-prompt Beta value tracker as the
baseline, prompts drawn by priority (`minimind_hf.native.spo`; the formulas are in its docstring).

    accelerate launch recipes/spo.py --config recipes/configs/tiny/spo.yaml
    minimind-hf train spo --config recipes/configs/tiny/spo.yaml
    accelerate launch -m minimind_hf.recipes.spo --config ...          # after pip install

trl has no SPO trainer, so this recipe is native only (``backend: trl`` is an error). As for PPO, the YAML is
transformers' ``TrainingArguments`` for the loop (``per_device_train_batch_size`` = prompts = completions),
`RLArguments` for prompts and rewards, and `SPOTrainingArguments`' own keys: trl's ``GRPOConfig`` would bring
keys SPO has no use for (``num_generations`` must be >= 2 there, clipping, reward scaling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.rl_shared import RLArguments, run_native_only
from transformers import TrainingArguments

NO_TRL = "backend trl: trl has no SPO trainer; SPO runs on the native backend (backend: native)"


@dataclass
class SPOTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments + SPO's keys (defaults: the original MiniMind's where it had them)."""

    learning_rate: float = field(default=1e-7, metadata={"help": "the original's 1e-7"})
    max_completion_length: int = field(default=256, metadata={"help": "new tokens sampled per completion"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature (the original's 0.8)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    beta: float = field(default=0.02, metadata={"help": "k3 KL coefficient to the starting model (0 = none)"})
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "one weight per reward (default 1)"}
    )
    reward_low: float = field(default=0.0, metadata={"help": "the summed rewards' lowest value (maps to 0)"})
    reward_high: float = field(
        default=1.0, metadata={"help": "the summed rewards' highest value (maps to 1)"}
    )
    d_half: float = field(
        default=0.06, metadata={"help": "log-prob change that halves the old estimate's weight"}
    )
    rho_min: float = field(default=0.5, metadata={"help": "the strongest forgetting per visit"})
    rho_max: float = field(default=0.96, metadata={"help": "the weakest forgetting (and a first visit's)"})
    priority_eps: float = field(default=0.05, metadata={"help": "floor of a prompt's sampling weight"})


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None) -> None:
    run_native_only(
        "spo",
        NO_TRL,
        "SPO starts from an SFT folder (e.g. the sft recipe's output_dir)",
        recipe_args,
        training_args,
        model_args,
        rl_args or RLArguments(),
    )


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, SPOTrainingArguments, trl ModelConfig, RLArguments) from ``--config FILE`` and
    flags."""
    return common.parse_recipe(SPOTrainingArguments, argv, extra_dataclasses=(RLArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
