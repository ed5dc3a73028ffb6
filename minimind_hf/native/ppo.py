"""Proximal Policy Optimisation for language models (Schulman et al. 2017; Ouyang et al. 2022), from scratch.

Actor = the policy LM. Critic = a MiniMind backbone with a scalar value head, V(s_t) at every token.
One rollout: sample completions, score each with the reward functions (one scalar per completion), then

    per-token reward   r_t = score * [t == last token] - kl_coef * (log pi_old - log pi_ref)_t  ("reward" KL)
    TD error           delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last token = 0)
    GAE                A_t = delta_t + gamma * lambda * A_{t+1};     returns R_t = A_t + V_t
    policy loss        -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t),   rho_t = pi / pi_old
    value loss         0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)
    KL ("loss" mode)   kl_coef * k3(pi, pi_ref) added to the loss per token (the original's choice)

Advantages are whitened over the rollout's completion tokens. All token averages are masked means over the
completion. Each rollout is trained on for ``ppo_epochs`` passes (the clip keeps the policy near pi_old); with
``mini_batch_size`` each pass is a new shuffle of the rollout's rows cut into mini-batches, one optimiser step
each (the original's ``ppo_update_iters`` x ``mini_batch_size``). With ``early_stop_kl``, a mini-batch whose
approximate KL to pi_old, mean 0.5 (log pi - log pi_old)^2 over its tokens (averaged over processes), exceeds
it contributes no loss and ends the rollout's passes: the next step samples a new rollout (the original's
early stop). Original defaults: gamma 1, lambda 0.95, clip 0.2, k3 KL 0.02 in the loss, 2 passes; its
mini-batches (2) and early stop (0.25) are in the minimind3 config; here both are off unless set.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_model_weights
from .common import build_model, check_data_files, load_tokenizer, seed_everything
from .dpo import make_reference
from .grpo import eval_reward, k3_kl, reward_problems, rewards_from_config
from .loop import Algorithm, TrainConfig, TrainResult, default_param_groups, train
from .rl_common import (
    load_rl_prompts,
    per_token_logps,
    position_ids_from_mask,
    sampling_problems,
    thinking_problems,
)
from .rollout import rollout_for, score
from .stages import register_stage

logger = logging.getLogger(__name__)

__all__ = [
    "PPO",
    "PPOConfig",
    "PolicyAndValue",
    "ValueModel",
    "build_ppo",
    "run_ppo",
    "compute_gae",
    "masked_mean",
    "masked_whiten",
    "minibatch_plan",
    "ppo_losses",
    "ppo_rollout",
    "ppo_step",
    "token_rewards",
]


@dataclass
class PPOConfig(TrainConfig):
    """The ``ppo`` stage: loop settings + rl data + PPO hyper-parameters (the original's gamma 1, lambda 0.95,
    clip 0.2, k3 KL 0.02, actor lr 3e-7, critic lr 5e-7). ``batch_size`` = prompts per micro-batch, one
    completion each; each rollout is used for ``ppo_epochs`` passes of ``ceil(batch_size / mini_batch_size)``
    optimiser steps, cut short by ``early_stop_kl``."""

    data: list[str] = field(default_factory=list)  # rl records (prompt, ground_truth, tools)
    eval_data: list[str] = field(default_factory=list)
    eval_ratio: float = 0.0
    max_prompts: int = 0
    skip_invalid: bool = False
    rewards: list[str] = field(default_factory=lambda: ["accuracy", "think_format"])
    reward_options: dict = field(default_factory=dict)
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.5
    kl_coef: float = 0.02
    kl_mode: str = "loss"  # loss: k3 KL in the loss (original) | reward: -kl_coef * log-ratio per token
    ppo_epochs: int = 2  # passes over each rollout
    mini_batch_size: int = 0  # rows per optimiser step within a pass; 0 = the whole micro-batch
    early_stop_kl: float = 0.0  # end a rollout's passes once approx KL to pi_old exceeds this; 0 = never
    whiten_advantages: bool = True
    max_new_tokens: int = 256
    max_prompt_length: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    open_thinking: bool = False
    # set: the share of prompts that open the think block instead of open_thinking (the original's 0.9)
    thinking_ratio: float | None = None
    generation_chunk: int = 16
    logprob_chunk: int = 16
    learning_rate: float = 3e-7  # actor
    critic_learning_rate: float = 5e-7
    batch_size: int = 2

    def validate(self) -> list[str]:
        p = super().validate()
        p += sampling_problems(self.temperature, self.top_p)
        p += thinking_problems(self.open_thinking, self.thinking_ratio)
        p += check_data_files("data", self.data)
        p += check_data_files("eval_data", self.eval_data, required=False)
        if self.model is None:
            p.append("PPO needs `model` (an SFT output folder); the critic starts from its backbone")
        if self.kl_mode not in ("loss", "reward"):
            p.append(f"kl_mode {self.kl_mode!r}; valid: loss, reward")
        p += reward_problems(self)
        for name in ("ppo_epochs", "max_new_tokens", "critic_learning_rate"):
            if getattr(self, name) <= 0:
                p.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.mini_batch_size < 0 or self.mini_batch_size > self.batch_size:
            p.append(
                f"mini_batch_size must be in [0, batch_size={self.batch_size}] (0 = the whole micro-batch), "
                f"got {self.mini_batch_size}"
            )
        if self.early_stop_kl < 0:
            p.append(f"early_stop_kl must be >= 0 (0 = never stop early), got {self.early_stop_kl}")
        return p

    @property
    def minibatches_per_pass(self) -> int:
        return -(-self.batch_size // self.mini_batch_size) if self.mini_batch_size else 1


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask == 1`` (both (B, K))."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over masked entries (biased variance); masked-out entries become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def token_rewards(
    scores: torch.Tensor,
    mask: torch.Tensor,
    logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Per-token rewards (B, K): the sequence score (B,) on each row's last completion token, minus
    ``kl_coef * (logps - ref_logps)`` on every token when both are given ("reward" KL mode)."""
    mask = mask.to(scores.dtype)
    last = mask.sum(dim=1).long().clamp(min=1) - 1  # (B,) index of the last completion token
    rewards = torch.zeros_like(mask)
    rewards[torch.arange(mask.size(0)), last] = scores
    if logps is not None and ref_logps is not None and kl_coef:
        rewards = rewards - kl_coef * (logps - ref_logps) * mask
    return rewards * mask


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, right to left. rewards, values, mask: (B, K), completions
    right-padded. Returns ``(advantages, returns)`` (B, K), zero on padding; V beyond the last token is 0."""
    mask = mask.to(values.dtype)
    values = values * mask
    B, K = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(K)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        adv = delta + gamma * lam * next_adv
        # on padding: carry nothing (the next real position's values stay 0 since padding is at the end)
        advantages[:, t] = adv * mask[:, t]
        next_adv = advantages[:, t]
        next_value = values[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


def ppo_losses(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
    clip_range_value: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Clipped policy loss and clipped value loss (masked token means). All inputs (B, K).

    Returns ``(policy_loss, value_loss, metrics)``."""
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)  # (B, K)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    policy_loss = masked_mean(torch.max(pg1, pg2), mask)
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    vf1 = (values - returns) ** 2
    vf2 = (v_clipped - returns) ** 2
    value_loss = 0.5 * masked_mean(torch.max(vf1, vf2), mask)
    metrics = {
        "clipfrac": float(masked_mean((pg2 > pg1).float(), mask)),
        "vf_clipfrac": float(masked_mean((vf2 > vf1).float(), mask)),
        "approx_kl": float(masked_mean(0.5 * (logps - old_logps).detach() ** 2, mask)),
    }
    return policy_loss, value_loss, metrics


class ValueModel(nn.Module):
    """Critic: a copy of the policy's backbone (``model.model``) + a linear value head, one value per
    token."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(policy.model)
        self.backbone.requires_grad_(True)
        hidden = policy.config.hidden_size
        self.value_head = nn.Linear(hidden, 1, dtype=next(self.backbone.parameters()).dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int
    ) -> torch.Tensor:
        """Values of the states *before* each of the last ``logits_to_keep`` tokens (the state the token was
        sampled in), (B, K)."""
        h = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state
        h = h[:, -logits_to_keep - 1 : -1, :]  # (B, K, H)
        return self.value_head(h).squeeze(-1).float()  # (B, K)


RewardFn = Callable[..., list[float]]


@torch.no_grad()
def ppo_rollout(
    policy,
    critic: ValueModel,
    reference,
    tokenizer,
    records: Sequence[dict],
    reward_funcs: Sequence[RewardFn],
    cfg: PPOConfig,
) -> dict:
    """Sample one completion per ``rl`` record, score it, and compute old log-probs, values, GAE."""
    r = rollout_for(cfg, policy, tokenizer, records)
    scores, _ = score(r, reward_funcs)  # (B,): PPO sums its rewards
    texts, c_mask = r.texts, r.policy_mask  # (B, K): values, advantages and the loss cover sampled tokens
    ids, am = r.input_ids, r.attention_mask
    K = c_mask.size(1)
    old_logps = per_token_logps(policy, ids, am, K, cfg.logprob_chunk, cfg.temperature)  # (B, K)
    ref_logps = per_token_logps(reference, ids, am, K, cfg.logprob_chunk, cfg.temperature)
    old_values = critic(ids, am, K) * c_mask  # (B, K)
    mask = c_mask.float()
    kl = cfg.kl_coef if cfg.kl_mode == "reward" else 0.0
    rewards = token_rewards(scores.to(mask.device), mask, old_logps, ref_logps, kl)
    advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return {
        "input_ids": ids,
        "attention_mask": am,
        "completion_mask": c_mask,
        "old_logps": old_logps,
        "ref_logps": ref_logps,
        "old_values": old_values,
        "advantages": advantages,
        "returns": returns,
        "scores": scores,
        "completions": texts,
    }


def ppo_step(
    actor_critic, batch: dict, cfg: PPOConfig, num_items: float | torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """``policy_loss + vf_coef * value_loss (+ kl_coef * k3 KL in "loss" mode)`` on a rollout micro-batch.

    One forward of ``actor_critic`` (a :class:`PolicyAndValue`, possibly DDP-wrapped) gives log-probs and
    values. Token means are over this micro-batch's completion tokens, scaled by ``tokens / num_items`` so
    that with the loop's step-wide ``num_items`` (completion tokens) the step's loss is the token mean
    over the whole step."""
    ids, am, cm = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    K = cm.size(1)
    mask = cm.float()
    logps, values = actor_critic(ids, am, K)  # (b, K), (b, K)
    pg, vf, metrics = ppo_losses(
        logps,
        batch["old_logps"],
        batch["advantages"],
        values,
        batch["old_values"],
        batch["returns"],
        mask,
        cfg.clip_range,
        cfg.clip_range_value,
    )
    loss = pg + cfg.vf_coef * vf
    kl = masked_mean(k3_kl(logps, batch["ref_logps"]), mask)
    if cfg.kl_mode == "loss":
        loss = loss + cfg.kl_coef * kl
    if num_items is not None:  # token mean of this micro-batch -> its share of the step's token mean
        loss = loss * mask.sum() / torch.as_tensor(num_items, dtype=loss.dtype).clamp(min=1.0)
    metrics.update(
        {
            "policy_loss": pg.item(),
            "value_loss": vf.item(),
            "kl": kl.item(),
            "reward": float(batch["scores"].mean()),
        }
    )
    return loss, metrics


def minibatch_plan(rows: int, cfg: PPOConfig) -> list[list[int]]:
    """The rows of each optimiser step of one rollout: ``ppo_epochs`` shuffles (torch's RNG, which the
    checkpoint restores) cut into ``mini_batch_size`` pieces; the rows in order without
    ``mini_batch_size``."""
    if not cfg.mini_batch_size:
        return [list(range(rows))] * cfg.ppo_epochs
    size, plan = cfg.mini_batch_size, []
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(rows).tolist()
        plan += [order[i : i + size] for i in range(0, rows, size)]
    return plan


def select_rows(batch: dict, rows: list[int]) -> dict:
    """The `rows` of a rollout batch: tensors and lists of one entry per row are indexed, the rest kept."""
    n, index = len(batch["completions"]), torch.tensor(rows)
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == n:
            out[key] = value[index.to(value.device)]
        elif isinstance(value, list) and len(value) == n and key != "minibatches":
            out[key] = [value[i] for i in rows]
        else:
            out[key] = value
    return out


class PolicyAndValue(nn.Module):
    """The module the loop trains: the policy LM and the critic. ``forward`` returns both, so a DDP wrapper
    around it sees every trainable parameter used in one forward and averages all gradients."""

    def __init__(self, policy: nn.Module, critic: ValueModel):
        super().__init__()
        self.policy, self.critic = policy, critic

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int):
        logps = per_token_logps(self.policy, input_ids, attention_mask, logits_to_keep)  # (B, K)
        values = self.critic(input_ids, attention_mask, logits_to_keep)  # (B, K)
        return logps, values


class PPO(Algorithm):
    """The loop's PPO: rollouts in ``prepare_batch`` (unwrapped policy, no gradients), one joint actor-critic
    forward in ``compute_loss``; the critic has its own learning rate. Saves the policy as the HF folder and
    the critic as ``value_model.safetensors`` beside it."""

    name = "ppo"

    def __init__(
        self,
        cfg: PPOConfig,
        model,
        tokenizer,
        train_dataset,
        eval_dataset=None,
        reward_funcs: Sequence[RewardFn] | None = None,
        reference=None,
        critic: ValueModel | None = None,
    ):
        actor_critic = (
            model if isinstance(model, PolicyAndValue) else PolicyAndValue(model, critic or ValueModel(model))
        )
        super().__init__(cfg, actor_critic, tokenizer, train_dataset, eval_dataset, collate_fn=list)
        self.reward_funcs = list(reward_funcs) if reward_funcs is not None else rewards_from_config(cfg)
        self.reference = reference if reference is not None else make_reference(actor_critic.policy)
        self.batch_uses = cfg.ppo_epochs * cfg.minibatches_per_pass

    def setup(self, accelerator) -> None:
        super().setup(accelerator)
        self.reference.to(self.device).eval()

    def param_groups(self, model) -> list[dict]:
        groups = default_param_groups(model.policy, self.cfg.weight_decay)
        for g in default_param_groups(model.critic, self.cfg.weight_decay):
            groups.append({**g, "lr": self.cfg.critic_learning_rate})
        return groups

    def prepare_batch(self, model, batch: list[dict]) -> dict:
        ac = self._unwrap(model)
        rollout = ppo_rollout(
            ac.policy, ac.critic, self.reference, self.tokenizer, batch, self.reward_funcs, self.cfg
        )
        rollout["minibatches"] = minibatch_plan(len(batch), self.cfg)
        rollout["stopped"] = False
        return rollout

    def select(self, batch: dict, use: int) -> dict | None:
        """Use `use` of a rollout: its mini-batch `use` of the plan, or None once KL stopped the passes."""
        if batch["stopped"]:
            return None
        rows = batch["minibatches"][use]
        if len(rows) == len(batch["completions"]):
            return {**batch, "parent": batch}
        return {**select_rows(batch, rows), "parent": batch}

    def num_items(self, batch: dict) -> int:
        return int(batch["completion_mask"].sum())

    def compute_loss(self, model, batch: dict, num_items_in_batch: torch.Tensor):
        loss, metrics = ppo_step(model, batch, self.cfg, num_items_in_batch)
        if self.cfg.early_stop_kl and model.training:
            kl = torch.tensor(metrics["approx_kl"], device=loss.device)
            if self.world_size > 1:  # every process decides alike, so they skip the same micro-batches
                kl = self.accelerator.reduce(kl, "mean")
            if float(kl) > self.cfg.early_stop_kl:
                batch["parent"]["stopped"] = True
                loss = loss * 0.0  # still backward, so DDP's gradient sync runs on every process
                metrics["early_stop"] = 1.0
            else:
                metrics["early_stop"] = 0.0
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        return eval_reward(self, self._unwrap(model).policy)

    def save_model(self, model, path) -> None:
        from safetensors.torch import save_file

        model.policy.save_pretrained(path, safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        state = {k: v.contiguous() for k, v in model.critic.state_dict().items()}
        save_file(state, str(Path(path) / "value_model.safetensors"))

    def load_model(self, model, path) -> None:
        from safetensors.torch import load_file

        load_model_weights(model.policy, path)
        model.critic.load_state_dict(load_file(str(Path(path) / "value_model.safetensors")))


def build_ppo(cfg: PPOConfig) -> PPO:
    seed_everything(cfg.seed)
    records, eval_records = load_rl_prompts(cfg)
    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, tokenizer)
    return PPO(cfg, model, tokenizer, records, eval_records)


def run_ppo(cfg: PPOConfig) -> TrainResult:
    return train(cfg, build_ppo(cfg))


register_stage("ppo", PPOConfig, run_ppo, help="PPO with a value model, GAE and a KL penalty")
