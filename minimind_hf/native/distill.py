"""Knowledge distillation (Hinton et al. 2015), from scratch: a student learns the labels and a teacher's
softened distribution at once.

Over the N label positions (labels != -100, after the causal shift), with temperature T:

    CE   = mean_n  -log softmax(s_n)[y_n]                                   hard labels
    KD   = mean_n  KL( softmax(t_n / T) || softmax(s_n / T) )
         = mean_n  sum_v p_t(v) (log p_t(v) - log p_s(v))
    loss = alpha * CE + (1 - alpha) * T^2 * KD

T^2 keeps the soft-target gradients the same size as T changes (they scale as 1/T^2). Original defaults:
alpha 0.5, T 1.5. The teacher runs in ``no_grad`` and only the label positions' logits are kept, so no full
``(B, T, V)`` float32 copy of both models' logits lives at once. Teacher and student must share the
tokenizer (same vocabulary size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.collate import IGNORE_INDEX
from .loop import Algorithm, TrainResult, train
from .sft import SFTConfig, build_sft
from .stages import register_stage

logger = logging.getLogger(__name__)

__all__ = ["Distill", "DistillConfig", "build_distill", "distill_step", "distillation_loss", "run_distill"]


@dataclass
class DistillConfig(SFTConfig):
    """The ``distill`` stage: SFT data and settings + a teacher (the original's alpha 0.5, T 1.5, lr 5e-6)."""

    teacher: str | None = None  # HF folder of the teacher (same tokenizer as the student)
    alpha: float = 0.5  # weight of the hard-label CE; 1 - alpha on the T^2 KL
    temperature: float = 1.5
    learning_rate: float = 5e-6

    def validate(self) -> list[str]:
        p = super().validate()
        if self.teacher is None or not Path(self.teacher).is_dir():
            p.append(f"teacher: need the folder of a trained teacher model, got {self.teacher!r}")
        if not 0.0 <= self.alpha <= 1.0:
            p.append(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            p.append(f"temperature must be > 0, got {self.temperature}")
        return p


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.5,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss above. student_logits, teacher_logits: (B, T, V); labels: (B, T), unshifted, -100 = ignore.

    ``num_items_in_batch``: label tokens over all accumulated micro-batches (exact accumulation, as the
    model's own loss); default this batch's. Returns ``(loss, {"ce", "kd"})``."""
    if student_logits.size(-1) != teacher_logits.size(-1):
        raise ValueError(
            f"student vocab {student_logits.size(-1)} != teacher vocab {teacher_logits.size(-1)}: "
            "distillation needs the same tokenizer"
        )
    targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
    keep = targets != IGNORE_INDEX  # (B, T-1)
    s = student_logits[:, :-1][keep].float()  # (N, V)
    t = teacher_logits[:, :-1][keep].float()  # (N, V)
    y = targets[keep]  # (N,)
    denom = keep.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch)
    denom = denom.to(s.device).clamp(min=1)
    ce = F.cross_entropy(s, y, reduction="sum") / denom
    log_ps = F.log_softmax(s / temperature, dim=-1)  # (N, V)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    kd = (log_pt.exp() * (log_pt - log_ps)).sum() / denom  # KL(p_t || p_s), summed over vocab and positions
    loss = alpha * ce + (1 - alpha) * temperature**2 * kd
    return loss, {"ce": float(ce.detach()), "kd": float(kd.detach())}


def distill_step(
    student,
    teacher,
    batch: dict[str, torch.Tensor],
    alpha: float = 0.5,
    temperature: float = 1.5,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One distillation forward on an SFT/pretrain batch (``input_ids``, ``labels``, optional
    ``attention_mask``/``position_ids``). Returns ``(loss, metrics)``;
    the caller does backward / optimiser."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    with torch.no_grad():
        teacher_logits = teacher(**inputs, use_cache=False).logits  # (B, T, V)
    student_logits = student(**inputs, use_cache=False).logits  # (B, T, V)
    return distillation_loss(
        student_logits, teacher_logits, batch["labels"], alpha, temperature, num_items_in_batch
    )


class Distill(Algorithm):
    """The loop's distillation: SFT batches, a frozen teacher; normalised by label tokens (the default)."""

    name = "distill"

    def __init__(
        self,
        cfg: DistillConfig,
        model,
        tokenizer,
        train_dataset,
        eval_dataset=None,
        collate_fn=None,
        teacher=None,
    ):
        super().__init__(cfg, model, tokenizer, train_dataset, eval_dataset, collate_fn)
        if teacher is None:
            from ..modeling_minimind import MiniMindForCausalLM

            teacher = MiniMindForCausalLM.from_pretrained(cfg.teacher, dtype=torch.float32)
        if teacher.config.vocab_size != model.config.vocab_size:
            raise ValueError(
                f"teacher vocab {teacher.config.vocab_size} != student vocab "
                f"{model.config.vocab_size}: distillation needs the same tokenizer"
            )
        self.teacher = teacher.eval().requires_grad_(False)

    def setup(self, accelerator) -> None:
        super().setup(accelerator)
        self.teacher.to(self.device)

    def compute_loss(self, model, batch: dict, num_items_in_batch: torch.Tensor):
        return distill_step(
            model, self.teacher, batch, self.cfg.alpha, self.cfg.temperature, num_items_in_batch
        )


def build_distill(cfg: DistillConfig) -> Distill:
    sft = build_sft(cfg)  # same data pipeline and student as SFT
    return Distill(cfg, sft.model, sft.tokenizer, sft.train_dataset, sft.eval_dataset, sft.collate_fn)


def run_distill(cfg: DistillConfig) -> TrainResult:
    return train(cfg, build_distill(cfg))


register_stage(
    "distill", DistillConfig, run_distill, help="knowledge distillation: alpha CE + (1-alpha) T^2 KL"
)
