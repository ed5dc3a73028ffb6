"""Group Relative Policy Optimisation (Shao et al. 2024, DeepSeekMath) and its CISPO variant, from scratch.

One rollout: each of P prompts is sampled G times (a *group*); every completion i gets a scalar reward r_i.

    advantage  A_i = (r_i - mean_group(r)) / (std_group(r) + 1e-4)    same A_i for every token of i
               ("batch" scaling uses the std of the whole batch, "none" only centres)
    ratio      rho_t = exp(log pi(y_t) - log pi_old(y_t))              pi_old = the policy that sampled
    GRPO       l_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A)
    CISPO      l_t = -sg(min(rho_t, eps_max)) * A * log pi(y_t)       (MiniMax-M1: clip the IS *weight*,
                                                                       keep every token's gradient)
    KL (k3)    kl_t = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1 >= 0,   l_t += beta * kl_t
               (``kl_ratio_correction``: beta * rho_t * kl_t, trl's default ``use_bias_correction_kl``)

Token-level normalisation (``loss_type``; m = completion mask, B rows, L_max = max completion length):

    "grpo"     mean_i( sum_t m l / sum_t m )       per-sequence mean, then mean (the paper; long answers
                                                    weigh less per token)
    "bnpo"     sum m l / sum m                      token mean (trl: per micro-batch, then averaged over
                                                    accumulation; here over the step, i.e. as "dapo")
    "dr_grpo"  sum m l / (B * L_max)                constant normaliser (Dr. GRPO: no length bias)
    "dapo"     sum m l / N_tokens                   token mean over the whole optimiser step

In the loop every micro-batch's loss is its sum of row contributions divided by the *step's* count
(:func:`grpo_num_items` summed over micro-batches and processes), so accumulation gives the full-batch loss.
    "cispo"    CISPO's per-token loss with the "dapo" normalisation (as trl)

Each rollout is reused for ``num_iterations`` optimiser passes (pi_old = the log-probs at sampling time);
with one pass rho = 1 and the clip is inactive, as in trl. Original defaults: 2 prompts x 6 samples,
beta 0.1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..rewards import REWARDS, get_rewards
from .common import build_model, check_data_files, load_tokenizer, seed_everything
from .dpo import make_reference
from .loop import Algorithm, TrainConfig, TrainResult, train
from .rl_common import load_rl_prompts, per_token_logps, sampling_problems, thinking_problems
from .rollout import rollout_for, score
from .stages import register_stage

logger = logging.getLogger(__name__)

__all__ = [
    "GRPO",
    "LOSS_TYPES",
    "GRPOConfig",
    "build_grpo",
    "grpo_loss",
    "run_grpo",
    "grpo_num_items",
    "grpo_rollout",
    "rewards_from_config",
    "grpo_step",
    "group_advantages",
    "k3_kl",
]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo")


@dataclass
class GRPOConfig(TrainConfig):
    """The ``grpo`` stage: loop settings + rl data + GRPO / CISPO hyper-parameters.

    ``batch_size`` counts *prompts* per micro-batch (each sampled ``num_generations`` times); defaults are
    the original's 2 prompts x 6 samples, KL beta 0.1, lr 3e-7."""

    data: list[str] = field(default_factory=list)  # rl records (prompt, ground_truth, tools)
    eval_data: list[str] = field(default_factory=list)
    eval_ratio: float = 0.0
    max_prompts: int = 0  # 0 = all
    skip_invalid: bool = False
    rewards: list[str] = field(
        default_factory=lambda: ["accuracy", "think_format"]
    )  # minimind_hf.rewards names
    reward_options: dict = field(
        default_factory=dict
    )  # {name: {option: value}}, e.g. {length: {max_length: 256}}
    reward_weights: list[float] = field(default_factory=list)  # empty = all 1
    num_generations: int = 6  # G, samples per prompt
    max_new_tokens: int = 256
    max_prompt_length: int = 512  # prompts are cut from the left
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.1  # k3 KL coefficient; 0 = no reference model
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2  # for cispo: the IS-weight cap (trl's cispo default is 5.0)
    loss_type: str = "grpo"  # grpo | bnpo | dr_grpo | dapo | cispo
    kl_ratio_correction: bool = False  # k3 KL times rho (trl's use_bias_correction_kl)
    scale_rewards: str = "group"  # group | batch | none
    num_iterations: int = 1  # optimiser steps per rollout (pi_old stays the sampling policy)
    open_thinking: bool = False  # prompts end in "<think>\n": the model writes its reasoning
    # set: the share of prompts that open the think block instead of open_thinking (the original's 0.9)
    thinking_ratio: float | None = None
    tools: list[str] = field(default_factory=list)  # minimind_hf.tools names run between turns; [] = one turn
    max_turns: int = 1  # sampled turns per rollout row (tool calls run between them)
    max_tool_response_tokens: int = 128  # a tool turn's tokens at most (responses are shortened to fit)
    generation_chunk: int = 16  # rows sampled at once
    logprob_chunk: int = 16  # rows per no-grad log-prob pass (old / reference)
    learning_rate: float = 3e-7
    batch_size: int = 2

    def validate(self) -> list[str]:
        from ..tools import TOOLS

        p = super().validate()
        unknown_tools = [t for t in self.tools if t not in TOOLS]
        if unknown_tools:
            p.append(f"tools: unknown {unknown_tools}; valid: {', '.join(sorted(TOOLS))}")
        p += sampling_problems(self.temperature, self.top_p)
        p += thinking_problems(self.open_thinking, self.thinking_ratio)
        if self.max_turns < 1:
            p.append(f"max_turns must be >= 1, got {self.max_turns}")
        if self.max_turns > 1 and not self.tools:
            p.append("max_turns > 1 needs tools: the turns are separated by tool calls")
        p += check_data_files("data", self.data)
        p += check_data_files("eval_data", self.eval_data, required=False)
        if self.model is None:
            p.append("GRPO needs `model` (an SFT output folder)")
        if self.loss_type not in LOSS_TYPES:
            p.append(f"loss_type {self.loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
        if self.scale_rewards not in ("group", "batch", "none"):
            p.append(f"scale_rewards {self.scale_rewards!r}; valid: group, batch, none")
        if self.num_generations < 2:
            p.append(
                f"num_generations must be >= 2 (advantages compare samples of a prompt), got "
                f"{self.num_generations}"
            )
        p += reward_problems(self)
        if self.reward_weights and len(self.reward_weights) != len(self.rewards):
            p.append(f"reward_weights has {len(self.reward_weights)} values for {len(self.rewards)} rewards")
        for name in ("num_iterations", "max_new_tokens", "generation_chunk", "logprob_chunk"):
            if getattr(self, name) <= 0:
                p.append(f"{name} must be > 0, got {getattr(self, name)}")
        return p


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """``(r - group mean) / (std + eps)`` for rewards (P*G,) ordered prompt-major. std is unbiased (as trl);
    ``scale="batch"`` divides by the std of all rewards, ``"none"`` only centres. Returns (P*G,)."""
    grouped = rewards.view(-1, group_size)  # (P, G)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)  # (P*G,)
    if scale == "none":
        return centred
    std = (
        grouped.std(dim=1).repeat_interleave(group_size)
        if scale == "group"
        else rewards.std().expand_as(rewards)
    )
    return centred / (std + eps)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per token: ``exp(d) - d - 1``, d = ref - logp. (B, K)"""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def grpo_num_items(mask: torch.Tensor, loss_type: str, max_completion_length: int | None = None) -> int:
    """The normaliser of one micro-batch for ``loss_type``: rows ("grpo"), completion tokens ("bnpo",
    "dapo", "cispo") or rows * L_max ("dr_grpo"). The loop sums it over the step's micro-batches and
    processes, which turns "grpo"/"dr_grpo" into the mean over all rows of the step and "bnpo"/"dapo"/
    "cispo" into the token mean over the whole step."""
    if loss_type == "grpo":
        return int(mask.size(0))
    if loss_type == "dr_grpo":
        return int(mask.size(0) * (max_completion_length or mask.size(1)))
    if loss_type in ("bnpo", "dapo", "cispo"):
        return int(mask.sum())
    raise ValueError(f"loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    loss_type: str = "grpo",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    num_items: float | torch.Tensor | None = None,
    max_completion_length: int | None = None,
    kl_ratio_correction: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO / CISPO loss (module docstring) of one micro-batch, as ``sum of contributions / num_items``.

    logps, old_logps, ref_logps, mask: (B, K); advantages: (B,). ``old_logps=None`` means on-policy
    (``logps.detach()``, ratio 1 with the policy's gradient). A row contributes its masked token *mean*
    ("grpo") or its masked token *sum* (the others). ``num_items`` defaults to
    :func:`grpo_num_items` of this micro-batch, which gives exactly the formulas in the module docstring;
    the loop passes the whole step's count. ``kl_ratio_correction``: multiply the k3 term by rho_t (the
    samples come from pi_old, not pi; trl's ``use_bias_correction_kl``, on by default there; off here and in
    the original, where the two coincide on-policy). Returns ``(loss, metrics)``."""
    mask = mask.to(logps.dtype)
    old_logps = logps.detach() if old_logps is None else old_logps
    A = advantages.unsqueeze(1)  # (B, 1)
    ratio = torch.exp(logps - old_logps)  # (B, K)
    if loss_type == "cispo":
        per_token = -torch.clamp(ratio, max=epsilon_high).detach() * A * logps  # (B, K)
        clipped = (ratio > epsilon_high) & (A > 0)
    elif loss_type in LOSS_TYPES:
        clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
        per_token = -torch.min(ratio * A, clipped_ratio * A)  # (B, K)
        clipped = ((ratio < 1 - epsilon_low) & (A < 0)) | ((ratio > 1 + epsilon_high) & (A > 0))
    else:
        raise ValueError(f"loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
    metrics: dict[str, float] = {}
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs ref_logps")
        kl = k3_kl(logps, ref_logps)  # (B, K)
        if kl_ratio_correction:
            kl = kl * ratio
        per_token = per_token + beta * kl
        metrics["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))

    if loss_type == "grpo":
        contributions = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,) per-sequence means
    else:
        contributions = (per_token * mask).sum(-1)  # (B,) per-sequence sums
    if num_items is None:
        num_items = grpo_num_items(mask, loss_type, max_completion_length)
    denom = torch.as_tensor(num_items, dtype=per_token.dtype, device=per_token.device).clamp(min=1.0)
    loss = contributions.sum() / denom
    metrics["clip_ratio"] = float((clipped.float() * mask).sum() / mask.sum().clamp(min=1))
    return loss, metrics


RewardFn = Callable[..., list[float]]


def reward_options(cfg) -> dict[str, dict]:
    """``cfg.reward_options`` as ``{reward: {option: value}}``; accepts the nested YAML form and the flat
    ``name.option`` keys that command-line overrides (``reward_options.length.max_length=256``) produce."""
    return parse_reward_options(cfg.reward_options)


def parse_reward_options(mapping: dict | None) -> dict[str, dict]:
    """``{name: {option: value}}`` or flat ``{"name.option": value}`` -> ``{name: {option: value}}``."""
    out: dict[str, dict] = {}
    for key, value in (mapping or {}).items():
        if "." in key:
            name, option = key.split(".", 1)
            out.setdefault(name, {})[option] = value
        elif isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            raise ValueError(f"reward_options.{key}: expected a mapping of options, got {value!r}")
    return out


def reward_problems(cfg) -> list[str]:
    """What is wrong with a stage config's ``rewards`` / ``reward_options``: unknown names (listing the valid
    ones), or options the reward functions refuse."""
    unknown = [r for r in cfg.rewards if r not in REWARDS]
    if unknown:
        return [f"rewards: unknown {unknown}; valid: {', '.join(sorted(REWARDS))}"]
    try:
        rewards_from_config(cfg)
    except (KeyError, TypeError, ValueError) as e:
        return [f"rewards / reward_options: {e}"]
    return []


def rewards_from_config(cfg) -> list[RewardFn]:
    """The reward functions named in ``cfg.rewards`` with ``cfg.reward_options`` bound (errors list the
    valid names / options)."""
    return get_rewards(list(cfg.rewards), reward_options(cfg))


@torch.no_grad()
def grpo_rollout(
    policy, reference, tokenizer, records: Sequence[dict], reward_funcs: Sequence[RewardFn], cfg: GRPOConfig
) -> dict:
    """Sample G completions for each ``rl`` record (prompt / ground_truth / tools), score and normalise them.

    Returns the rollout batch: ``input_ids``/``attention_mask`` (N, P+K) with N = len(records) * G,
    ``completion_mask`` (N, K), ``advantages`` (N,), ``old_logps`` (N, K) when ``num_iterations > 1``,
    ``ref_logps`` (N, K) when ``beta != 0``, ``rewards`` (N,) and
    ``completions`` (decoded text)."""
    G = cfg.num_generations
    r = rollout_for(cfg, policy, tokenizer, records, num_samples=G)
    rewards, per_func = score(r, reward_funcs, cfg.reward_weights)  # (N,), {name: (N,)}
    advantages = group_advantages(rewards, G, cfg.scale_rewards)  # (N,)

    input_ids, attention_mask = r.input_ids, r.attention_mask  # (N, P+K)
    K = r.completion_ids.size(1)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": r.policy_mask,  # the loss mask: sampled tokens only
        "advantages": advantages.to(input_ids.device),
        "rewards": rewards,
        "completions": r.texts,
        "max_completion_length": cfg.max_new_tokens,
        "turns": float(sum(r.turns)) / max(len(r.turns), 1),
        "tool_calls": float(sum(len(c) for c in r.tool_calls)) / max(len(r.tool_calls), 1),
    }
    if cfg.num_iterations > 1:
        batch["old_logps"] = per_token_logps(
            policy, input_ids, attention_mask, K, cfg.logprob_chunk, cfg.temperature
        )
    if cfg.beta != 0.0:
        batch["ref_logps"] = per_token_logps(
            reference, input_ids, attention_mask, K, cfg.logprob_chunk, cfg.temperature
        )
    for name, values in per_func.items():
        batch[f"rewards/{name}"] = float(values.mean())
    return batch


def grpo_step(
    policy, batch: dict, cfg: GRPOConfig, num_items: float | torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of a rollout micro-batch: one forward pass with gradients (through ``policy(...)``, so a
    DDP-wrapped policy synchronises gradients), then :func:`grpo_loss`. ``num_items``: the step's count."""
    ids, am, cm = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    logps = per_token_logps(policy, ids, am, cm.size(1), None, cfg.temperature)  # (b, K)
    loss, metrics = grpo_loss(
        logps,
        batch.get("old_logps"),
        batch["advantages"],
        cm,
        ref_logps=batch.get("ref_logps"),
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        epsilon_low=cfg.epsilon_low,
        epsilon_high=cfg.epsilon_high,
        num_items=num_items,
        max_completion_length=batch.get("max_completion_length"),
        kl_ratio_correction=cfg.kl_ratio_correction,
    )
    metrics["reward"] = float(batch["rewards"].mean())
    metrics["completion_length"] = float(cm.sum(1).float().mean())
    if "turns" in batch:
        metrics["turns"], metrics["tool_calls"] = batch["turns"], batch["tool_calls"]
    return loss, metrics


class GRPO(Algorithm):
    """The loop's GRPO: ``prepare_batch`` samples and scores a rollout for the micro-batch's prompts (with the
    unwrapped policy, no gradients, in chunks), ``compute_loss`` runs one forward through the (DDP-wrapped)
    policy, so gradients are averaged over processes by the loop (the original bypassed this, #853).

    Each rollout is trained on for ``num_iterations`` optimiser steps (the loop's ``batch_uses``), then new
    prompts are drawn; a checkpoint keeps a rollout in use, so a resumed run continues it."""

    name = "grpo"

    def __init__(
        self,
        cfg: GRPOConfig,
        model,
        tokenizer,
        train_dataset,
        eval_dataset=None,
        reward_funcs: Sequence[RewardFn] | None = None,
        reference=None,
    ):
        super().__init__(cfg, model, tokenizer, train_dataset, eval_dataset, collate_fn=list)
        self.reward_funcs = list(reward_funcs) if reward_funcs is not None else rewards_from_config(cfg)
        if cfg.beta != 0.0:
            self.reference = reference if reference is not None else make_reference(model)
        else:
            self.reference = None
        self.batch_uses = cfg.num_iterations

    def setup(self, accelerator) -> None:
        super().setup(accelerator)
        if self.reference is not None:
            self.reference.to(self.device).eval()

    def prepare_batch(self, model, batch: list[dict]) -> dict:
        policy = self._unwrap(model)
        return grpo_rollout(policy, self.reference, self.tokenizer, batch, self.reward_funcs, self.cfg)

    def num_items(self, batch: dict) -> int:
        return grpo_num_items(batch["completion_mask"], self.cfg.loss_type, self.cfg.max_new_tokens)

    def compute_loss(self, model, batch: dict, num_items_in_batch: torch.Tensor):
        loss, metrics = grpo_step(model, batch, self.cfg, num_items_in_batch)
        metrics.update({k: v for k, v in batch.items() if k.startswith("rewards/")})
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Mean reward of one greedy completion per eval prompt."""
        return eval_reward(self, self._unwrap(model))


def eval_reward(algo: Algorithm, policy) -> dict[str, float]:
    """``{"eval/reward": ...}``: the mean reward of one greedy completion per eval prompt of an RL algorithm
    (GRPO, SPO, PPO); {} without eval prompts."""
    if algo.eval_dataset is None or len(algo.eval_dataset) == 0:
        return {}
    reward = mean_reward(
        policy, algo.tokenizer, list(algo.eval_dataset), algo.reward_funcs, algo.cfg, greedy=True
    )
    return {"eval/reward": reward}


@torch.no_grad()
def mean_reward(
    policy,
    tokenizer,
    records: Sequence[dict],
    reward_funcs: Sequence[RewardFn],
    cfg,
    samples: int = 1,
    greedy: bool = False,
) -> float:
    """The mean total reward of ``samples`` completions per record (greedy if asked)."""
    r = rollout_for(cfg, policy, tokenizer, records, num_samples=samples, greedy=greedy)
    total, _ = score(r, reward_funcs, getattr(cfg, "reward_weights", None))
    return float(total.mean()) if len(total) else 0.0


def build_grpo(cfg: GRPOConfig) -> GRPO:
    seed_everything(cfg.seed)
    records, eval_records = load_rl_prompts(cfg)
    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, tokenizer)
    logger.info(
        "grpo: %d prompts x %d samples, loss %s, rewards %s",
        len(records),
        cfg.num_generations,
        cfg.loss_type,
        cfg.rewards,
    )
    return GRPO(cfg, model, tokenizer, records, eval_records)


def run_grpo(cfg: GRPOConfig) -> TrainResult:
    return train(cfg, build_grpo(cfg))


register_stage("grpo", GRPOConfig, run_grpo, help="GRPO / CISPO with rule rewards (minimind_hf.rewards)")
