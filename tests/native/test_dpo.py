"""DPO: parity with trl's DPOTrainer (loss, implicit rewards, gradients), the shared prompt rendering, and a
run through the native loop that starts at exactly ln 2 and falls."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from minimind_hf.data import demo_corpus, load_records
from minimind_hf.data.augment import augment_records
from minimind_hf.data.dpo_pipeline import PAIR_COLUMNS, tokenize_pairs
from minimind_hf.data.rendering import render_pair
from minimind_hf.native.dpo import DPO, DPOCollator, DPOConfig, dpo_loss, dpo_step, make_reference
from minimind_hf.native.loop import train

BETA = 0.15


@pytest.fixture
def tok(tiny_tokenizer):
    """The session's tiny tokenizer (shared: read only)."""
    return tiny_tokenizer


def pair_records(n, seed=0):
    out = []
    for p in demo_corpus.math_problems(n, seed, stream="dpo-test"):
        good = f"答案是 {p.answer}。" if p.lang == "zh" else f"The answer is {p.answer}."
        bad = (
            f"答案是 {int(float(p.answer)) + 3}。"
            if p.lang == "zh"
            else f"The answer is {int(float(p.answer)) + 3}."
        )
        out.append(
            {
                "chosen": [{"role": "user", "content": p.question}, {"role": "assistant", "content": good}],
                "rejected": [{"role": "user", "content": p.question}, {"role": "assistant", "content": bad}],
            }
        )
    return out


def test_dpo_loss_formula_by_hand():
    pc, pr = torch.tensor([-5.0, -7.0]), torch.tensor([-6.0, -6.5])
    rc, rr = torch.tensor([-5.5, -7.0]), torch.tensor([-5.5, -6.0])
    loss, m = dpo_loss(pc, pr, rc, rr, beta=0.1)
    d = torch.tensor([0.5 - (-0.5), 0.0 - (-0.5)])  # chosen log-ratio - rejected log-ratio
    assert loss.item() == pytest.approx((-torch.nn.functional.logsigmoid(0.1 * d)).mean().item(), abs=1e-7)
    assert m["rewards/chosen"].tolist() == pytest.approx([0.05, 0.0])
    assert m["rewards/margins"].tolist() == pytest.approx([0.1, 0.05])
    assert m["rewards/accuracies"].tolist() == [1.0, 1.0]
    same, _ = dpo_loss(pc, pr, pc, pr, beta=0.1)
    assert same.item() == pytest.approx(math.log(2), abs=1e-7)


@pytest.fixture
def fresh_accelerate_state():
    """trl's trainers initialise accelerate's process-wide state (with their own mixed-precision choice);
    reset it afterwards so the native loop in later tests can create its own Accelerator."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def test_parity_with_trl_dpo_trainer(tok, make_tiny_model, tmp_path, fresh_accelerate_state):
    """trl's DPOTrainer._compute_loss on its own collated batch vs our dpo_step on the same tensors.

    Tolerance: 1e-5 absolute on the loss and rewards, 1e-4 relative on gradients (fp32, same tokens; trl
    computes log-probs with its fused chunked LM head, we with logsumexp over the kept logits; observed:
    loss equal, rewards 4e-7, gradients 1e-6 relative). trl runs with bf16=False: its default autocasts
    to bf16 even on CPU (the reference then differs by ~1e-3 in summed log-probs).
    By design our collator ends each answer at <|im_end|> (what generation produces); trl also scores the
    template's newline after it. So both sides are fed trl's batch here, and the collator is tested alone."""
    from datasets import Dataset
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    policy = make_tiny_model()
    ref = copy.deepcopy(policy)
    with torch.no_grad():  # policy != reference, so the loss is not just ln 2
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    # our copies, untouched by trl (it patches forward); trl with bf16=False (its default autocasts to bf16
    # even on CPU)
    ours, ours_ref = copy.deepcopy(policy), make_reference(ref)
    recs = load_records("dpo", _write(tmp_path, pair_records(4)))
    ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in recs])
    args = TrlDPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=BETA,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        max_length=128,
        save_strategy="no",
        bf16=False,
    )
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer._compute_loss(trainer.model, batch, False)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    trainer.model.zero_grad()
    m = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    our_loss, logs = dpo_step(ours, ours_ref, batch, beta=BETA)
    our_loss.backward()
    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(our_loss.item() - math.log(2)) > 1e-3
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    ):
        assert logs[key] == pytest.approx(m[key], abs=1e-5, rel=1e-5), key
    for n, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, trl_grads[n], rtol=1e-4, atol=1e-7, msg=n)


def _write(tmp_path, records):
    path = tmp_path / "dpo.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _pairs(tok, tmp_path, records, cfg=None):
    """`records` written, loaded as dpo records and tokenised once, as `build_dpo` does."""
    cfg = cfg or DPOConfig()
    recs = load_records("dpo", _write(tmp_path, records))
    return tokenize_pairs(recs, tok, cfg.max_length, cfg.max_prompt_length, cfg.open_thinking)


@pytest.mark.parametrize("open_thinking", [False, True])
def test_collator_shares_the_prompt_and_ends_answers_at_eos(tok, tmp_path, open_thinking):
    cfg = DPOConfig(open_thinking=open_thinking)
    recs = _pairs(tok, tmp_path, pair_records(3), cfg)
    b = DPOCollator(tok)([recs[i] for i in range(3)])
    ids, cm, am = b["input_ids"], b["completion_mask"], b["attention_mask"]
    assert ids.shape[0] == 6 and cm.shape == ids.shape
    for i in range(3):
        c, r = i, i + 3  # chosen rows first, then rejected
        start_c, start_r = int(cm[c].argmax()), int(cm[r].argmax())
        assert start_c == start_r and torch.equal(ids[c, :start_c], ids[r, :start_r])  # same prompt tokens
        prompt = tok.decode(ids[c, :start_c])
        assert prompt.endswith("<think>\n" if open_thinking else "<think>\n\n</think>\n\n")
        for row in (c, r):
            answer = ids[row][cm[row].bool()]
            assert answer[-1].item() == tok.eos_token_id  # ends at <|im_end|>, as generated
            assert int(am[row].sum()) == start_c + len(answer)  # right padding only after the answer
    assert "答案是" in tok.decode(ids[0][cm[0].bool()]) or "answer" in tok.decode(ids[0][cm[0].bool()])


def test_dpo_through_the_loop_starts_at_ln2_and_falls(tok, make_tiny_model, tmp_path):
    recs = _pairs(tok, tmp_path, pair_records(8, seed=1))
    cfg = DPOConfig(
        output_dir=str(tmp_path / "out"),
        data=[],
        beta=BETA,
        learning_rate=5e-3,
        batch_size=4,
        max_steps=6,
        report_to=["none"],
        progress=False,
        resume="never",
        warmup_steps=0,
        min_lr_ratio=1.0,
    )
    model = make_tiny_model(seed=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    algo = DPO(cfg, model, tok, recs, eval_dataset=[recs[i] for i in range(3)])
    ref_before = {n: p.detach().clone() for n, p in algo.reference.named_parameters()}
    result = train(cfg, algo)
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 0
    assert result.losses[-1] < result.losses[0] - 0.05
    trained = algo.accelerator.unwrap_model(algo.model)
    assert all(not torch.equal(before[n], p.detach().cpu()) for n, p in trained.named_parameters())
    assert all(torch.equal(ref_before[n], p.detach().cpu()) for n, p in algo.reference.named_parameters())
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    steps = [rec for rec in log if "rewards/margins" in rec]  # eval records are separate lines
    assert len(steps) == 6 and steps[-1]["rewards/margins"] > 0 and "rewards/accuracies" in steps[-1]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert result.eval["eval/rewards/margins"] > 0 and 0 <= result.eval["eval/rewards/accuracies"] <= 1


def test_reference_is_frozen_copy(make_tiny_model):
    model = make_tiny_model()
    ref = make_reference(model)
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    assert all(
        p.data_ptr() != q.data_ptr() for p, q in zip(model.parameters(), ref.parameters(), strict=True)
    )


def test_precomputed_reference_logps_give_the_same_training(tok, make_tiny_model, tmp_path):
    """precompute_ref_logps scores every pair with the reference once and frees it: the losses and final
    weights equal those of the run that keeps the reference model and scores each batch (fp32, 1e-5)."""
    recs = _pairs(tok, tmp_path, pair_records(8, seed=1))
    runs = {}
    for pre in (False, True):
        cfg = DPOConfig(
            output_dir=str(tmp_path / f"out{pre}"),
            data=[],
            beta=BETA,
            learning_rate=5e-3,
            batch_size=4,
            max_steps=4,
            report_to=["none"],
            progress=False,
            resume="never",
            precompute_ref_logps=pre,
            mixed_precision="no",  # fp32, as the tolerances assume (auto is bf16 where the CPU has it)
        )
        algo = DPO(cfg, make_tiny_model(seed=3), tok, recs, eval_dataset=[recs[i] for i in range(3)])
        result = train(cfg, algo)
        assert (algo.reference is None) == pre
        runs[pre] = (result, algo.accelerator.unwrap_model(algo.model).state_dict())
    (kept, w_kept), (pre, w_pre) = runs[False], runs[True]
    assert pre.losses == pytest.approx(kept.losses, abs=1e-5)
    assert pre.eval["eval/rewards/margins"] == pytest.approx(kept.eval["eval/rewards/margins"], abs=1e-5)
    # the reference scores differ only by float rounding (batches padded to another width); Adam's normalised
    # steps can turn that into ~1e-5 on a weight whose gradient is near zero
    for name, value in w_kept.items():
        torch.testing.assert_close(w_pre[name], value, rtol=1e-3, atol=1e-4)


def _direct_encoding(tok, record, max_length, max_prompt_length, open_thinking, drop):
    """The reference: render_pair + the tokenizer on one record, truncated by the stated rules."""
    tools = record.get("tools")
    p_text, c_text = render_pair(tok, record["prompt"], record["chosen"], tools, open_thinking, drop)
    _, r_text = render_pair(tok, record["prompt"], record["rejected"], tools, open_thinking, drop)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = enc(p_text)[-max_prompt_length:]
    room = max(max_length - len(prompt), 1)
    return [prompt, enc(c_text)[:room], enc(r_text)[:room]]


@pytest.mark.parametrize(("max_length", "max_prompt_length"), [(1024, 512), (30, 18)])
def test_pretokenised_pairs_equal_render_pair_plus_the_tokenizer(
    tok, tmp_path, max_length, max_prompt_length
):
    """Every tokenised row == its record rendered by render_pair and encoded directly, with the per-record
    augmentation draw (chat_template_kwargs.drop_empty_think from the seed) and the truncation rules."""
    recs = augment_records(
        load_records("dpo", _write(tmp_path, pair_records(12, seed=2))),
        kind="dpo",
        empty_think_ratio=0.5,
        seed=7,
        tokenizer=tok,
    )
    drops = [bool(r["chat_template_kwargs"]["drop_empty_think"]) for r in recs]
    assert 0 < sum(drops) < len(drops)  # both renderings occur
    pairs = tokenize_pairs(recs, tok, max_length, max_prompt_length)
    assert pairs.column_names == list(PAIR_COLUMNS) and len(pairs) == len(recs)
    cut = 0
    for i, (record, drop) in enumerate(zip(recs, drops, strict=True)):
        want = _direct_encoding(tok, record, max_length, max_prompt_length, False, drop)
        assert [pairs[i][c] for c in PAIR_COLUMNS] == want, i
        full = _direct_encoding(tok, record, 10**6, 10**6 - 1, False, drop)
        cut += want != full
    assert (cut > 0) == (max_length < 1024)  # the short setting really truncates, the long one never


class _NoTokenizing:
    """A tokenizer stand-in that has a pad id and fails on any tokenising or rendering."""

    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, *args, **kwargs):
        raise AssertionError("the collator called the tokenizer")

    apply_chat_template = encode = __call__


def test_collator_only_pads_pretokenised_rows(tok, tmp_path):
    pairs = _pairs(tok, tmp_path, pair_records(4))
    rows = [pairs[i] for i in range(4)]
    batch = DPOCollator(_NoTokenizing(tok.pad_token_id))(rows)
    assert torch.equal(batch["input_ids"], DPOCollator(tok)(rows)["input_ids"])
    for part, key in enumerate(("chosen_ids", "rejected_ids")):
        for i, row in enumerate(rows):
            n = len(row["prompt_ids"]) + len(row[key])
            assert batch["input_ids"][part * 4 + i, :n].tolist() == row["prompt_ids"] + row[key]
            assert batch["completion_mask"][part * 4 + i].tolist()[:n] == [0] * len(row["prompt_ids"]) + [
                1
            ] * len(row[key])
            assert int(batch["attention_mask"][part * 4 + i].sum()) == n
    raw = load_records("dpo", _write(tmp_path, pair_records(2)))
    with pytest.raises(ValueError, match="takes tokenised pairs .*tokenise the records before training"):
        DPOCollator(tok)([raw[0], raw[1]])


def test_a_pair_that_cannot_be_rendered_names_its_row(tok, tmp_path):
    """open_thinking prompts end in "<think>\n"; a pair drawn to drop the empty think block cannot continue
    it."""
    recs = load_records("dpo", _write(tmp_path, pair_records(3)))
    recs = recs.map(lambda r, i: {"chat_template_kwargs": {"drop_empty_think": i == 2}}, with_indices=True)
    with pytest.raises(ValueError, match="DPO pair at row 2: the rendered conversation does not start with"):
        tokenize_pairs(recs, tok, 1024, 512, open_thinking=True)
    with pytest.raises(ValueError, match="needs dpo records .*missing chosen, rejected"):
        tokenize_pairs(recs.remove_columns(["chosen", "rejected"]), tok, 1024, 512)


def test_open_thinking_with_dropped_empty_think_blocks_is_refused_before_work():
    problems = DPOConfig(open_thinking=True, empty_think_ratio=0.5).validate()
    assert any("open_thinking prompts end inside it" in p for p in problems), problems
    assert not any("open_thinking" in p for p in DPOConfig(open_thinking=True).validate())
