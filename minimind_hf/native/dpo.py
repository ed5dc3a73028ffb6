"""Direct Preference Optimisation (Rafailov et al. 2023), from scratch.

For a prompt x with a preferred answer y_w (chosen) and a dispreferred y_l (rejected), a policy pi and a
frozen reference pi_ref (a copy of the starting model):

    logratio_w = log pi(y_w|x) - log pi_ref(y_w|x)          (sums over the answer tokens only)
    logratio_l = log pi(y_l|x) - log pi_ref(y_l|x)
    loss       = -log sigmoid(beta * (logratio_w - logratio_l))        (mean over pairs)

With pi == pi_ref both log-ratios are 0 and the loss is exactly ln 2 = 0.6931; it falls as soon as the
policy moves mass from y_l to y_w. (The original's "stuck at 0.693", minimind #674, is what lr 4e-8 looks
like; the loss here is the same formula, see the trl parity test.) Logged: implicit rewards
``beta * logratio`` for chosen / rejected, their margin, and accuracy = fraction with chosen > rejected.
Optional conservative DPO label smoothing eps: ``-(1-eps) logsig(beta d) - eps logsig(-beta d)``.

Batch layout (as trl): ``input_ids`` (2B, T) = [chosen rows; rejected rows], every row = prompt tokens +
answer tokens, right-padded; ``completion_mask`` (2B, T) marks the answer tokens. The pairs are tokenised
once before training (`minimind_hf.data.dpo_pipeline.tokenize_pairs`: chosen and rejected share the prompt
tokens, truncation as there); the collator only pads and stacks those ids.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.augment import augment_records, augmentation_problems
from ..data.dpo_pipeline import PAIR_COLUMNS, tokenize_pairs
from .common import (
    build_model,
    check_data_files,
    load_tokenizer,
    load_train_and_eval,
    seed_everything,
)
from .loop import Algorithm, TrainConfig, TrainResult, train
from .rl_common import pad
from .stages import register_stage

logger = logging.getLogger(__name__)

__all__ = [
    "DPO",
    "DPOCollator",
    "DPOConfig",
    "build_dpo",
    "dpo_loss",
    "dpo_step",
    "make_reference",
    "run_dpo",
    "sequence_logps",
]


@dataclass
class DPOConfig(TrainConfig):
    """The ``dpo`` stage: loop settings + data + DPO hyper-parameters (the original's beta 0.15, lr 4e-8;
    our default lr 1e-6 moves a real model visibly in one epoch)."""

    data: list[str] = field(default_factory=list)  # dpo records: chosen/rejected (+ prompt) jsonl/parquet
    eval_data: list[str] = field(default_factory=list)
    eval_ratio: float = 0.0
    max_pairs: int = 0  # 0 = all
    skip_invalid: bool = False
    beta: float = 0.15
    label_smoothing: float = 0.0  # conservative DPO; 0 = plain DPO
    max_length: int = 1024  # prompt + answer tokens
    max_prompt_length: int = 512  # prompts are cut from the left
    open_thinking: bool = False  # render prompts ending in "<think>\n" (answers then start with reasoning)
    empty_think_ratio: float = (
        1.0  # share of pairs keeping the empty think block (data.augment; original 0.2)
    )
    precompute_ref_logps: bool = False  # score every pair with the reference once, then free it (trl's
    #   precompute_ref_log_probs): one model in memory while training, no reference forward per step
    learning_rate: float = 1e-6
    batch_size: int = 4  # pairs per micro-batch

    def validate(self) -> list[str]:
        p = super().validate()
        p += augmentation_problems(0.0, self.empty_think_ratio)
        if self.open_thinking and self.empty_think_ratio < 1:
            # an open-thinking prompt ends inside the think block, so there is no empty block to drop
            p.append(
                f"empty_think_ratio {self.empty_think_ratio} drops the empty think block, but open_thinking "
                "prompts end inside it: set empty_think_ratio 1 or open_thinking false"
            )
        p += check_data_files("data", self.data)
        p += check_data_files("eval_data", self.eval_data, required=False)
        if self.model is None:
            p.append(
                "DPO needs `model` (an SFT output folder): the policy and the frozen reference start there"
            )
        if self.beta <= 0:
            p.append(f"beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            p.append(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if not 0 < self.max_prompt_length < self.max_length:
            p.append(
                f"need 0 < max_prompt_length < max_length, got {self.max_prompt_length}, {self.max_length}"
            )
        return p


def make_reference(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model``: eval mode, no gradients (the DPO / GRPO / PPO reference)."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.15,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DPO loss from sequence log-probs, all (B,). Returns ``(mean loss, metrics)``.

    metrics (detached): ``rewards/chosen``, ``rewards/rejected`` (B,) = beta * log-ratios,
    ``rewards/margins`` (B,), ``rewards/accuracies`` (B,) in {0, 1}, ``losses`` (B,)."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)  # (B,)
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    metrics = {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "losses": losses.detach(),
    }
    return losses.mean(), metrics


def sequence_logps(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """Sum of log pi(token) over the tokens marked by ``completion_mask``. All (N, T) -> (N,).

    One forward pass; the LM head runs only on the positions that predict completion tokens (from the
    earliest completion column on, ``logits_to_keep``), so prompt logits are never built."""
    # columns that hold completion tokens in any row; the logits before them are never needed
    first = int(completion_mask.argmax(dim=1).min())  # earliest completion column
    keep = input_ids.size(1) - first + 1  # logits at positions first-1 .. T-1
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1, :].float()  # (N, K, V) predicts columns first .. T-1
    targets = input_ids[:, first:]  # (N, K)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (N, K)
    del logits, out
    return (logp * completion_mask[:, first:]).sum(dim=1)  # (N,)


def dpo_step(
    policy,
    reference,
    batch: dict[str, torch.Tensor],
    beta: float = 0.15,
    label_smoothing: float = 0.0,
    num_items: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One DPO forward: ``(sum of pair losses / num_items, logged metrics)``; the caller does backward.

    ``batch``: ``input_ids``, ``attention_mask``, ``completion_mask`` (2B, T), chosen rows first.
    ``num_items``: pairs in the whole optimiser step (the loop's normaliser; default B, i.e. the mean).
    Reference log-probs come from ``batch["ref_chosen_logps"]``/``["ref_rejected_logps"]`` if precomputed."""
    logps = sequence_logps(
        policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    )  # (2B,)
    chosen_logps, rejected_logps = logps.chunk(2)  # (B,), (B,)
    if "ref_chosen_logps" in batch:
        ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
    else:
        with torch.no_grad():
            ref = sequence_logps(
                reference, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
            )
        ref_chosen, ref_rejected = ref.chunk(2)
    mean_loss, m = dpo_loss(chosen_logps, rejected_logps, ref_chosen, ref_rejected, beta, label_smoothing)
    if num_items is None:
        loss = mean_loss
    else:  # the pair losses' sum over the step's normaliser (same gradient as the global mean)
        loss = mean_loss * chosen_logps.size(0) / torch.as_tensor(num_items, dtype=mean_loss.dtype)
    logs = {k: float(v.mean()) for k, v in m.items() if k != "losses"}
    logs["logps/chosen"] = float(chosen_logps.detach().mean())
    logs["logps/rejected"] = float(rejected_logps.detach().mean())
    return loss, logs


class DPOCollator:
    """Tokenised pairs (`PAIR_COLUMNS`, from `tokenize_pairs`) -> a DPO batch: chosen rows, then rejected
    rows, each ``prompt_ids + answer ids``, right-padded. No tokenising here:
    that happens once, before training."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        if rows and not all(c in rows[0] for c in PAIR_COLUMNS):
            raise ValueError(
                f"DPOCollator takes tokenised pairs (columns {', '.join(PAIR_COLUMNS)}, from "
                "minimind_hf.data.dpo_pipeline.tokenize_pairs), got a row with "
                f"{', '.join(sorted(rows[0]))}: tokenise the records before training"
            )
        seqs, comp = [], []
        for answer_key in ("chosen_ids", "rejected_ids"):  # chosen rows, then rejected rows
            for row in rows:
                prompt, answer = list(row["prompt_ids"]), list(row[answer_key])
                seqs.append(prompt + answer)
                comp.append([0] * len(prompt) + [1] * len(answer))
        ids, mask = pad(seqs, self.tok.pad_token_id, side="right")
        completion_mask, _ = pad(comp, 0, side="right")
        batch = {"input_ids": ids, "attention_mask": mask, "completion_mask": completion_mask}
        if rows and "ref_chosen_logps" in rows[0]:  # precomputed reference scores travel with the rows
            for key in ("ref_chosen_logps", "ref_rejected_logps"):
                batch[key] = torch.tensor([float(r[key]) for r in rows], dtype=torch.float32)
        return batch


class DPO(Algorithm):
    """The loop's DPO: a frozen reference copy of the starting model; the step's loss is
    ``sum over pairs of -log sigmoid(beta * margin) / pairs in the step``. ``train_dataset`` /
    ``eval_dataset`` hold tokenised pairs (`minimind_hf.data.dpo_pipeline.tokenize_pairs`), as `build_dpo`
    makes them."""

    name = "dpo"

    def __init__(self, cfg: DPOConfig, model, tokenizer, train_dataset, eval_dataset=None, reference=None):
        super().__init__(
            cfg, model, tokenizer, train_dataset, eval_dataset, collate_fn=DPOCollator(tokenizer)
        )
        self.reference = reference if reference is not None else make_reference(model)

    def setup(self, accelerator) -> None:
        super().setup(accelerator)
        self.reference.to(self.device).eval()
        if self.cfg.precompute_ref_logps:
            with accelerator.autocast():  # the precision the loop scores the policy in
                self.train_dataset = self.with_reference_logps(self.train_dataset)
                if self.eval_dataset is not None:
                    self.eval_dataset = self.with_reference_logps(self.eval_dataset)
            self.reference = None  # never needed again: free its memory
            logger.info(
                "dpo: reference log-probs precomputed for %d pairs; reference model freed",
                len(self.train_dataset),
            )

    @torch.no_grad()
    def with_reference_logps(self, dataset):
        """``dataset`` plus columns ``ref_chosen_logps`` / ``ref_rejected_logps`` (the frozen reference's
        summed answer log-probs), computed once in eval mode; every process scores every row, so no
        communication."""
        from tqdm.auto import tqdm

        chosen, rejected = [], []
        bs = self.cfg.batch_size
        main = getattr(self.accelerator, "is_main_process", True)
        for start in tqdm(range(0, len(dataset), bs), desc="reference log-probs", disable=not main):
            rows = [dataset[i] for i in range(start, min(start + bs, len(dataset)))]
            batch = {k: v.to(self.device) for k, v in self.collate_fn(rows).items()}
            logps = sequence_logps(
                self.reference, batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
            )
            c, r = logps.float().cpu().chunk(2)
            chosen += c.tolist()
            rejected += r.tolist()
        if hasattr(dataset, "add_column"):  # a datasets.Dataset
            return dataset.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)
        return [
            {**dataset[i], "ref_chosen_logps": c, "ref_rejected_logps": r}
            for i, (c, r) in enumerate(zip(chosen, rejected, strict=True))
        ]

    def num_items(self, batch: dict) -> int:
        return batch["input_ids"].size(0) // 2  # pairs

    def compute_loss(self, model, batch: dict, num_items_in_batch: torch.Tensor):
        return dpo_step(
            model, self.reference, batch, self.cfg.beta, self.cfg.label_smoothing, num_items_in_batch
        )

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Mean DPO loss, reward margin and accuracy over the eval pairs (this process's share)."""
        if self.eval_dataset is None or len(self.eval_dataset) == 0:
            return {}
        sums: dict[str, float] = {}
        n = 0
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        for start in range(0, len(self.eval_dataset), bs):
            if self.cfg.eval_max_batches and start // bs >= self.cfg.eval_max_batches:
                break
            rows = [self.eval_dataset[i] for i in range(start, min(start + bs, len(self.eval_dataset)))]
            batch = {k: v.to(self.device) for k, v in self.collate_fn(rows).items()}
            loss, logs = dpo_step(model, self.reference, batch, self.cfg.beta, self.cfg.label_smoothing)
            for k, v in {"loss": float(loss), **logs}.items():
                sums[k] = sums.get(k, 0.0) + v * len(rows)
            n += len(rows)
        return {f"eval/{k}": v / n for k, v in sums.items()}


def build_dpo(cfg: DPOConfig) -> DPO:
    seed_everything(cfg.seed)
    records, eval_records = load_train_and_eval("dpo", cfg, cfg.max_pairs)
    tokenizer = load_tokenizer(cfg)
    records = augment_records(
        records, kind="dpo", empty_think_ratio=cfg.empty_think_ratio, seed=cfg.seed, tokenizer=tokenizer
    )
    # tokenised once here (cached by datasets), not by the collator on every step of every epoch
    pairs = tokenize_pairs(records, tokenizer, cfg.max_length, cfg.max_prompt_length, cfg.open_thinking)
    eval_pairs = None
    if eval_records is not None:
        eval_pairs = tokenize_pairs(
            eval_records, tokenizer, cfg.max_length, cfg.max_prompt_length, cfg.open_thinking
        )
    model = build_model(cfg, tokenizer)
    logger.info("dpo: %d pairs, beta %g", len(pairs), cfg.beta)
    return DPO(cfg, model, tokenizer, pairs, eval_pairs)


def run_dpo(cfg: DPOConfig) -> TrainResult:
    return train(cfg, build_dpo(cfg))


register_stage("dpo", DPOConfig, run_dpo, help="direct preference optimisation against a frozen reference")
