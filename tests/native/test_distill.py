"""Distillation: alpha CE + (1 - alpha) T^2 KL against a direct computation, its edge cases, and the
`distill` stage through the native loop (the student moves towards the teacher)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from minimind_hf.data import demo_corpus
from minimind_hf.native.distill import DistillConfig, build_distill, distillation_loss
from minimind_hf.native.loop import train


def test_loss_against_direct_computation():
    torch.manual_seed(0)
    B, T, V = 2, 5, 7
    s, t = torch.randn(B, T, V), torch.randn(B, T, V)
    labels = torch.randint(0, V, (B, T))
    labels[0, :2] = -100
    alpha, temp = 0.3, 1.5
    loss, m = distillation_loss(s, t, labels, alpha, temp)
    ce_terms, kd_terms = [], []
    for b in range(B):
        for i in range(T - 1):  # position i predicts token i + 1
            y = labels[b, i + 1].item()
            if y == -100:
                continue
            ce_terms.append(-F.log_softmax(s[b, i], -1)[y].item())
            p_t = F.softmax(t[b, i] / temp, -1)
            p_s = F.softmax(s[b, i] / temp, -1)
            kd_terms.append(sum(p_t[v] * math.log(p_t[v] / p_s[v]) for v in range(V)).item())
    ce, kd = sum(ce_terms) / len(ce_terms), sum(kd_terms) / len(kd_terms)
    assert m["ce"] == pytest.approx(ce, abs=1e-5) and m["kd"] == pytest.approx(kd, abs=1e-5)
    assert loss.item() == pytest.approx(alpha * ce + (1 - alpha) * temp**2 * kd, abs=1e-5)
    # normalising by a larger (accumulated) count scales the loss down exactly
    loss2, _ = distillation_loss(s, t, labels, alpha, temp, num_items_in_batch=2 * len(ce_terms))
    assert loss2.item() == pytest.approx(loss.item() / 2, abs=1e-6)
    # a teacher equal to the student contributes nothing; alpha 1 is plain CE
    same, m = distillation_loss(s, s, labels, 0.0, temp)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    plain, _ = distillation_loss(s, t, labels, 1.0, temp)
    ref = F.cross_entropy(s[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert plain.item() == pytest.approx(ref.item(), abs=1e-6)
    with pytest.raises(ValueError, match="same tokenizer"):
        distillation_loss(s, torch.randn(B, T, V + 1), labels)


def test_distill_stage_through_the_loop(tmp_path, tiny_tokenizer, make_tiny_model):
    teacher = make_tiny_model(seed=0)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(20)  # a confident teacher, far from the student
    teacher.save_pretrained(tmp_path / "teacher")
    student = make_tiny_model(seed=1)
    student.save_pretrained(tmp_path / "student")
    tiny_tokenizer.save_pretrained(tmp_path / "student")
    data = tmp_path / "sft.jsonl"
    data.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in demo_corpus.sft_conversations(16)),
        encoding="utf-8",
    )
    cfg = DistillConfig(
        output_dir=str(tmp_path / "out"),
        model=str(tmp_path / "student"),
        teacher=str(tmp_path / "teacher"),
        data=[str(data)],
        max_length=128,
        batch_size=4,
        max_steps=6,
        learning_rate=5e-3,
        alpha=0.0,
        report_to=["none"],
        progress=False,
        resume="never",
    )
    assert cfg.validate() == []
    algo = build_distill(cfg)
    result = train(cfg, algo)
    assert result.losses[-1] < result.losses[0]  # alpha 0: the loss is the T^2 KL to the teacher alone
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["kd"] < log[0]["kd"] and "ce" in log[0]
    assert not any(p.requires_grad for p in algo.teacher.parameters())
    bad = DistillConfig(output_dir=str(tmp_path / "x"), model=str(tmp_path / "student"), data=[str(data)])
    assert any("teacher" in p for p in bad.validate())
