"""Agentic RL: GRPO / CISPO on multi-turn rollouts in which the model calls tools (the original's agent RL).

The stage is GRPO (`minimind_hf.native.grpo`: same advantages, losses, KL, loop) with a rollout that runs
tools between turns (`minimind_hf.native.rollout`): a sample's turn that ends in ``<tool_call>`` blocks gets
the tools' responses appended as the chat template renders ``tool`` messages, and continues, up to
``max_turns``. Only the sampled tokens are trained; tool responses are context. Defaults follow the original's
agent RL: up to 3 turns, the CISPO loss (clipped importance weights, every token keeps its gradient), and
rewards for

- ``gt_coverage``: the share of the row's ground-truth values (``gt``, a list) found in the final answer;
- ``tool_use``: successful calls vs. the number the ground truth needs;
- ``tool_format``: unbalanced tags and call blocks that do not parse;
- ``unfinished``: a rollout that ran out of turns or tokens before a final answer.

Records are ``rl`` records: a ``prompt`` conversation, ``tools`` schemas (optional: the ``tools`` named here
are shown when a record has none) and ``gt`` / ``ground_truth`` (a value or a list of values).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .grpo import GRPOConfig, build_grpo
from .loop import TrainResult, train
from .stages import register_stage

__all__ = ["AgentConfig", "run_agent"]


@dataclass
class AgentConfig(GRPOConfig):
    """The ``agent`` stage: `GRPOConfig` with tools on and the original's agent-RL defaults."""

    tools: list[str] = field(default_factory=lambda: ["calculator"])
    max_turns: int = 3
    loss_type: str = "cispo"
    epsilon_high: float = 5.0  # CISPO's cap on the importance weight (trl's default for cispo)
    rewards: list[str] = field(
        default_factory=lambda: ["gt_coverage", "tool_use", "tool_format", "unfinished"]
    )
    # thinking_ratio draws per sample, as the original's agent RL does (its default ratio: 0.1)
    thinking_per_sample = True

    def validate(self) -> list[str]:
        p = super().validate()
        if not self.tools:
            p.append(
                "tools: the agent stage needs at least one tool (e.g. [calculator]); use grpo for one turn"
            )
        return p


def run_agent(cfg: AgentConfig) -> TrainResult:
    algo = build_grpo(cfg)
    algo.name = "agent"
    return train(cfg, algo)


register_stage(
    "agent", AgentConfig, run_agent, help="agentic RL: GRPO / CISPO on multi-turn tool-use rollouts"
)
