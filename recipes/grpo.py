"""GRPO (and CISPO / DAPO / Dr. GRPO) with rule rewards, with trl's ``GRPOTrainer`` or our native trainer.

    accelerate launch recipes/grpo.py --config recipes/configs/tiny/grpo.yaml
    accelerate launch recipes/grpo.py --config recipes/configs/tiny/grpo.yaml --backend native
    accelerate launch -m minimind_hf.recipes.grpo --config ...          # after pip install

Prompts come from `load_split("rl", ...)` (``prompt`` messages + ``ground_truth``); every dataset column
reaches the reward functions as a keyword list, one value per completion (trl's convention, which the native
trainer follows too). Rewards are picked by name from `minimind_hf.rewards` (``rewards: [accuracy,
think_format]``, ``reward_options: {length: {max_length: 256}}``) and weighted by trl's ``reward_weights``.

Batch semantics (the one thing that differs between the two vocabularies):

- trl: ``per_device_train_batch_size`` counts *completions* per process per micro-step; one generation
  covers ``steps_per_generation`` (default ``gradient_accumulation_steps``) micro-steps, i.e.
  ``per_device_train_batch_size * processes * gradient_accumulation_steps / num_generations`` prompts per
  optimiser step, each sampled ``num_generations`` times.
- native: ``batch_size`` counts *prompts* per micro-batch, each sampled ``num_generations`` times.

So the recipe gives the native trainer ``batch_size = per_device_train_batch_size / num_generations`` (the
same prompts and completions per optimiser step). When ``per_device_train_batch_size`` is not a multiple of
``num_generations`` but ``per_device_train_batch_size * gradient_accumulation_steps`` is, the native run
takes the whole step in one micro-batch (same step, more memory); otherwise it is an error. The original's
"2 prompts x 6 samples" is ``per_device_train_batch_size: 12, num_generations: 6``.

The native translation of every key is the ``GRPO`` table in ``recipes/native_bridge.py`` (shown in
recipes/README.md); any other trl option set away from its default is refused there, naming it.

Known differences that remain: trl scales ``scale_rewards: batch`` by the std of the whole generation batch,
the native trainer by the std of its micro-batch; trl renders per-record ``tools`` only when the recipe
turns the prompts into text (it does so when any record has tools).
"""

from __future__ import annotations

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.native_bridge import run_native, trl_refusals
from minimind_hf.recipes.rl_shared import RLArguments, open_thinking, reward_problems, run_trl


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None) -> None:
    rl_args = rl_args or RLArguments()
    common.prepare_runtime(recipe_args)
    problems = reward_problems(rl_args, training_args.reward_weights)
    if recipe_args.backend == "trl":
        problems += trl_refusals("grpo", rl_args)
    common.check_recipe(
        recipe_args,
        training_args,
        model_args,
        extra=problems,
        needs_model="GRPO starts from an SFT folder (e.g. the sft recipe's output_dir)",
        stage="grpo",
        stage_args=(rl_args,),
    )
    if recipe_args.backend == "native":
        run_native("grpo", recipe_args, training_args, model_args, rl_args)
        return

    if common.dry_run(recipe_args, training_args, model_args):
        return
    from trl import GRPOTrainer

    run_trl(
        GRPOTrainer, recipe_args, training_args, model_args, rl_args, open_thinking(rl_args, training_args)
    )


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl GRPOConfig, trl ModelConfig, RLArguments) from ``--config FILE`` and
    ``--key value``."""
    from trl import GRPOConfig

    return common.parse_recipe(GRPOConfig, argv, extra_dataclasses=(RLArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
