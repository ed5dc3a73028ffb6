"""Single-stream Policy Optimisation (SPO, Xu et al. 2025): one sample per prompt, a per-prompt value tracker.

GRPO needs G samples of a prompt to get a baseline; SPO keeps, for every prompt x, a Beta posterior on its
success rate and uses its mean as the baseline, so each prompt is sampled once per visit:

    normalised reward   r = clip((R - lo) / (hi - lo), 0, 1)              R: the summed registry rewards
    baseline            v(x) = alpha_x / (alpha_x + beta_x)                 read before the update
    advantage           A = r - v(x), then standardised over the batch     (mean 0, std 1: global
                                                                            normalisation)
    forgetting          rho_x = clip(2 ** (-D_x / D_half), rho_min, rho_max)
                        D_x = |mean log pi(y | x) now - at x's previous visit|   (a KL proxy; rho_max on
                                                                                  a first visit)
    update              alpha_x <- rho_x alpha_x + r,   beta_x <- rho_x beta_x + (1 - r)
    prior               alpha = beta = 0.5 / (1 - rho_min)                  (the pseudo-count a fully
                                                                             forgetting tracker settles at)
    sampling            P(x) ~ sqrt(v(x) (1 - v(x))) + eps                  prompts near 50% success first
    loss                per token: -A log pi(y_t) + beta_kl * k3(pi, pi_ref), the "grpo" per-sequence mean
                        (`minimind_hf.native.grpo.grpo_loss` with one pass: the ratio is 1)

A policy that moves fast (large D) forgets its old estimates quickly; a stable one averages over many visits.
The tracker is the algorithm's state: it is checkpointed (`state_dict`) and restored on resume, and with
several processes every process applies every process's updates, so the trackers stay identical.
trl has no SPO trainer: the stage is native only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .grpo import GRPOConfig, eval_reward, grpo_loss, grpo_num_items, rewards_from_config
from .loop import Algorithm, TrainResult, train
from .rl_common import load_rl_prompts, per_token_logps
from .rollout import rollout_for, score
from .stages import register_stage

logger = logging.getLogger(__name__)

__all__ = ["SPO", "SPOConfig", "ValueTracker", "run_spo"]


@dataclass
class SPOConfig(GRPOConfig):
    """The ``spo`` stage: `GRPOConfig`'s data, sampling and KL settings, one sample per prompt, and the
    tracker.

    ``num_generations`` must be 1 (that is the point); ``batch_size`` counts prompts (= completions)."""

    num_generations: int = 1
    loss_type: str = "grpo"
    reward_low: float = 0.0  # the rewards' range, mapped to [0, 1] for the Beta tracker
    reward_high: float = 1.0
    d_half: float = 0.06  # the log-prob change that halves the weight of the old estimate
    rho_min: float = 0.5
    rho_max: float = 0.96
    priority_eps: float = 0.05  # floor of the sampling weight (solved and hopeless prompts still come back)

    def validate(self) -> list[str]:
        p = [x for x in super().validate() if not x.startswith("num_generations must be >= 2")]
        if self.num_generations != 1:
            p.append(f"num_generations must be 1 for SPO (one sample per prompt), got {self.num_generations}")
        if self.num_iterations != 1:
            p.append("num_iterations must be 1 for SPO (the tracker sees each rollout once)")
        if self.scale_rewards != "group":
            p.append(
                "scale_rewards: SPO standardises its advantages over the batch itself; leave the default"
            )
        if self.loss_type != "grpo":
            p.append(f"loss_type {self.loss_type!r}: SPO uses the per-sequence policy-gradient loss (grpo)")
        if not self.reward_low < self.reward_high:
            p.append(f"need reward_low < reward_high, got {self.reward_low}, {self.reward_high}")
        if not 0.0 < self.rho_min <= self.rho_max < 1.0:
            p.append(f"need 0 < rho_min <= rho_max < 1, got {self.rho_min}, {self.rho_max}")
        if self.d_half <= 0 or self.priority_eps <= 0:
            p.append("d_half and priority_eps must be > 0")
        return p


class ValueTracker:
    """Per-prompt Beta posteriors with KL-adaptive forgetting (see the module docstring)."""

    def __init__(self, n: int, rho_min: float = 0.5, rho_max: float = 0.96, d_half: float = 0.06):
        self.rho_min, self.rho_max, self.d_half = rho_min, rho_max, d_half
        prior = 0.5 / (1.0 - rho_min)
        self.alpha = torch.full((n,), prior, dtype=torch.float64)
        self.beta = torch.full((n,), prior, dtype=torch.float64)
        self.last_logp = torch.full((n,), float("nan"), dtype=torch.float64)  # NaN = never visited

    def baseline(self, idx: torch.Tensor) -> torch.Tensor:
        return (self.alpha[idx] / (self.alpha[idx] + self.beta[idx])).float()

    def rho(self, idx: torch.Tensor, mean_logp: torch.Tensor) -> torch.Tensor:
        old = self.last_logp[idx]
        d = (mean_logp.double() - old).abs()
        rho = torch.pow(2.0, -d / self.d_half).clamp(self.rho_min, self.rho_max)
        return torch.where(torch.isnan(old), torch.full_like(rho, self.rho_max), rho)

    def update(self, idx: torch.Tensor, reward01: torch.Tensor, mean_logp: torch.Tensor) -> torch.Tensor:
        """Apply one visit per row (a prompt drawn twice in a batch gets both updates in order);
        returns rho."""
        rhos = []
        for i, r, lp in zip(
            idx.tolist(), reward01.double().tolist(), mean_logp.double().tolist(), strict=True
        ):
            rho = float(self.rho(torch.tensor([i]), torch.tensor([lp]))[0])
            self.alpha[i] = rho * self.alpha[i] + r
            self.beta[i] = rho * self.beta[i] + (1.0 - r)
            self.last_logp[i] = lp
            rhos.append(rho)
        return torch.tensor(rhos)

    def priorities(self, eps: float) -> torch.Tensor:
        v = self.alpha / (self.alpha + self.beta)
        return torch.sqrt(v * (1.0 - v)) + eps

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "last_logp": self.last_logp}

    def load_state_dict(self, state: dict) -> None:
        self.alpha, self.beta, self.last_logp = state["alpha"], state["beta"], state["last_logp"]


def spo_advantages(reward01: torch.Tensor, baseline: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``r - v(x)``, standardised over the batch (a batch of one is only centred on its baseline)."""
    a = reward01 - baseline
    if a.numel() < 2:
        return a
    return (a - a.mean()) / (a.std() + eps)


class SPO(Algorithm):
    """The loop's SPO: ``prepare_batch`` draws prompts by tracker priority (the loop's own rows only set the
    batch size), samples one completion each, scores them and updates the tracker; ``compute_loss`` is the
    policy-gradient loss of `grpo_loss`."""

    name = "spo"

    def __init__(self, cfg: SPOConfig, model, tokenizer, train_dataset, eval_dataset=None, reward_funcs=None):
        super().__init__(cfg, model, tokenizer, train_dataset, eval_dataset, collate_fn=list)
        self.reward_funcs = list(reward_funcs) if reward_funcs is not None else rewards_from_config(cfg)
        self.tracker = ValueTracker(len(train_dataset), cfg.rho_min, cfg.rho_max, cfg.d_half)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.reference = None
        if cfg.beta != 0.0:
            from .dpo import make_reference

            self.reference = make_reference(model)

    def setup(self, accelerator) -> None:
        super().setup(accelerator)
        if self.reference is not None:
            self.reference.to(self.device).eval()

    def draw(self, batch_size: int) -> torch.Tensor:
        """This process's prompt indices: every process draws the same ``batch_size * world`` (one shared
        generator, identical trackers) and takes its slice."""
        total = batch_size * self.world_size
        weights = self.tracker.priorities(self.cfg.priority_eps)
        drawn = torch.multinomial(weights, total, replacement=True, generator=self.generator)
        rank = self.accelerator.process_index
        return drawn[rank * batch_size : (rank + 1) * batch_size]

    @torch.no_grad()
    def prepare_batch(self, model, batch: list[dict]) -> dict:
        cfg, policy = self.cfg, self._unwrap(model)
        idx = self.draw(len(batch))
        records = [self.train_dataset[i] for i in idx.tolist()]
        r = rollout_for(cfg, policy, self.tokenizer, records)
        total, per_func = score(r, self.reward_funcs, cfg.reward_weights)
        reward01 = ((total - cfg.reward_low) / (cfg.reward_high - cfg.reward_low)).clamp(0.0, 1.0)
        ids, am, mask = r.input_ids, r.attention_mask, r.policy_mask
        logps = per_token_logps(policy, ids, am, mask.size(1), cfg.logprob_chunk, cfg.temperature)  # (B, K)
        mean_logp = (logps * mask).sum(1).cpu() / mask.sum(1).clamp(min=1).cpu()
        baseline = self.tracker.baseline(idx)
        # every process applies every process's visits, in rank order, so the trackers stay identical
        seen = [idx, reward01, mean_logp.float()]
        if self.world_size > 1:
            seen = [self.accelerator.gather(t.to(self.device)).cpu() for t in seen]
        rho = self.tracker.update(*seen)
        batch_out = {
            "input_ids": ids,
            "attention_mask": am,
            "completion_mask": mask,
            "advantages": spo_advantages(reward01, baseline).to(ids.device),
            "rewards": total,
            "baseline": float(baseline.mean()),
            "rho": float(rho.mean()),
        }
        if self.reference is not None:
            batch_out["ref_logps"] = per_token_logps(
                self.reference, ids, am, mask.size(1), cfg.logprob_chunk, cfg.temperature
            )
        for name, values in per_func.items():
            batch_out[f"rewards/{name}"] = float(values.mean())
        return batch_out

    def num_items(self, batch: dict) -> int:
        return grpo_num_items(batch["completion_mask"], "grpo")

    def compute_loss(self, model, batch: dict, num_items_in_batch: torch.Tensor):
        cfg, cm = self.cfg, batch["completion_mask"]
        logps = per_token_logps(
            model, batch["input_ids"], batch["attention_mask"], cm.size(1), None, cfg.temperature
        )
        loss, metrics = grpo_loss(
            logps,
            None,
            batch["advantages"],
            cm,
            ref_logps=batch.get("ref_logps"),
            beta=cfg.beta,
            loss_type="grpo",
            num_items=num_items_in_batch,
        )
        metrics.update(reward=float(batch["rewards"].mean()), baseline=batch["baseline"], rho=batch["rho"])
        metrics.update({k: v for k, v in batch.items() if k.startswith("rewards/")})
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        return eval_reward(self, self._unwrap(model))

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.generator.set_state(state["generator"])


def build_spo(cfg: SPOConfig, reward_funcs: Sequence | None = None) -> SPO:
    from .common import build_model, load_tokenizer, seed_everything

    seed_everything(cfg.seed)
    records, eval_records = load_rl_prompts(cfg)
    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, tokenizer)
    logger.info("spo: %d prompts, one sample each, rewards %s", len(records), cfg.rewards)
    return SPO(cfg, model, tokenizer, records, eval_records, reward_funcs)


def run_spo(cfg: SPOConfig) -> TrainResult:
    return train(cfg, build_spo(cfg))


register_stage("spo", SPOConfig, run_spo, help="SPO: one sample per prompt, per-prompt Beta value tracker")
