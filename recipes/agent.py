"""Agentic RL: GRPO / CISPO on multi-turn rollouts in which the model calls tools (`minimind_hf.native.agent`).

    accelerate launch recipes/agent.py --config recipes/configs/tiny/agent.yaml
    minimind-hf train agent --config recipes/configs/tiny/agent.yaml
    accelerate launch -m minimind_hf.recipes.agent --config ...          # after pip install

The GRPO recipe's YAML (trl's ``GRPOConfig`` + `RLArguments`) with ``tools`` (names from `minimind_hf.tools`)
and trl's ``max_tool_calling_iterations`` (tool rounds; turns = iterations + 1). A sample's turn that ends in
``<tool_call>`` blocks gets the tools' responses appended as the chat template renders ``tool`` messages and
continues; only sampled tokens are trained. Records: ``rl`` records with ``gt`` (a value or a list) and
optional per-record ``tools`` schemas (the named tools are shown when a record has none). Rewards from the
registry: ``gt_coverage``, ``tool_use``, ``tool_format``, ``unfinished`` (and the single-turn ones).

Native only for now: ``backend: trl`` is an error. trl 1.16's ``GRPOTrainer(tools=...)`` parses tool calls with
a tokenizer response template, which MiniMind's chat template does not have yet.
"""

from __future__ import annotations

from minimind_hf.recipes import common  # recipes/ is installed as minimind_hf.recipes (setup.cfg package_dir)
from minimind_hf.recipes.rl_shared import RLArguments, run_native_only

NO_TRL = (
    "backend trl: the agent recipe runs on the native backend only for now (trl 1.16's GRPOTrainer(tools=) needs "
    "a response template for MiniMind's chat template, not built yet); use backend: native"
)


def main(recipe_args, training_args, model_args, rl_args: RLArguments | None = None) -> None:
    run_native_only(
        "agent",
        NO_TRL,
        "agentic RL starts from an SFT folder that has seen tool calls",
        recipe_args,
        training_args,
        model_args,
        rl_args or RLArguments(),
    )


def parse_args(argv: list[str] | None = None) -> tuple:
    """(RecipeArguments, trl GRPOConfig, trl ModelConfig, RLArguments) from ``--config FILE`` and ``--key value``."""
    from trl import GRPOConfig

    return common.parse_recipe(GRPOConfig, argv, extra_dataclasses=(RLArguments,))


if __name__ == "__main__":
    common.run_cli(main, parse_args)
