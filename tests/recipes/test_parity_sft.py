"""SFT parity: our native SFT (``minimind_hf.native.sft``) and trl's ``SFTTrainer`` train the same thing.

Same tiny model (`tiny_model_dir`), same conversations, same hyper-parameters, fp32 on the CPU:

(a) labels: trl's tokenised dataset (chat template + ``assistant_masks`` -> ``labels``) equals our
    `encode_conversation` / `tokenize_conversations` output token for token, unpacked and packed, with and
    without truncation, for system prompts, multi-turn, ``reasoning_content`` and tool calls + tool responses
    with ``tools``. Both sides hand *unshifted* labels to the model, which shifts them (``labels[t+1]`` is
    predicted from position ``t``; ``labels[0]`` of a sequence is never trained), so the arrays are compared
    as they are.
(b) loss and gradients of one batch: trl's ``SFTTrainer.compute_loss`` (``num_items_in_batch`` from
    ``Trainer._get_num_items_in_batch``, i.e. label tokens of ``labels[..., 1:]``) vs the native `SFT`
    algorithm's ``compute_loss`` (``num_items`` = the same count), for a right-padded batch (trl: padding
    attention mask; ours: no mask, positions continuing through the pad) and a packed one (trl: bfd packing +
    padding-free collation = one flattened row; ours: best-fit rows of ``max_length`` with pad tails).
(c) optimizer steps through both real training loops (``SFTTrainer.train()`` vs `native.loop.train`):
    losses, learning rates, grad norms and the weights afterwards.

By-design differences found (each asserted below, not hidden):

- weight decay grouping: transformers' ``Trainer`` exempts only biases and parameters whose *name* matches
  a norm pattern (``layernorm``, ``rmsnorm``, ``.norm.``, ``_norm``; our RMSNorms are all caught that way),
  so it **decays the token embedding** (tied with ``lm_head``). The native loop exempts embeddings too (as
  MiniMind did). With ``weight_decay > 0`` the two backends therefore differ on ``model.embed_tokens.weight``
  from the first step, by exactly ``lr * weight_decay * w`` after one step. `matched_trainer_class` (one
  overridden method) makes trl group like us; with it every weight agrees after two steps.
- packing + truncation: trl's bfd packing truncates conversations to ``max_length`` but keeps those left with
  no assistant token (pure prompt: compute, no loss); we drop them while tokenising. Without packing trl
  drops them too. The trained tokens are the same either way; only which rows get built differs.
- the collated batches differ in layout (trl: padding mask, or one flattened padding-free row; ours: no
  mask, fixed packed rows with pad tails), not in what is trained: the same (context, target) pairs.
"""

from __future__ import annotations

import copy
import json
import math
from functools import partial

import pytest
import torch

from minimind_hf.data import load_records
from minimind_hf.data.collate import IGNORE_INDEX, collate_rows
from minimind_hf.data.demo_corpus import sft_conversations
from minimind_hf.data.packing import pack_sequences
from minimind_hf.data.rendering import encode_conversation
from minimind_hf.data.sft_pipeline import tokenize_conversations
from minimind_hf.native.loop import default_param_groups, train
from minimind_hf.native.sft import SFT, SFTConfig

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

# Conversations covering every part of the template: system prompt, multi-turn, reasoning_content, an
# assistant turn that only calls a tool, a tool response (rendered as a user turn), a final answer, and
# `tools`.
HANDMADE = [
    {
        "conversations": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "The answer is 5."},
        ]
    },
    {
        "conversations": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Count to three."},
            {"role": "assistant", "content": "1, 2, 3."},
        ]
    },
    {
        "conversations": [
            {"role": "user", "content": "What is 7*6?"},
            {"role": "assistant", "content": "The answer is 42.", "reasoning_content": "7 times 6 is 42."},
        ]
    },
    {
        "conversations": [
            {"role": "system", "content": "Use tools when needed."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": '{"temp": 21}'},
            {"role": "assistant", "content": "It is 21 degrees in Paris."},
        ],
        "tools": TOOLS,
    },
]

# one optimizer configuration for both backends (the tiny recipe's, with a larger lr and decay so that a step,
# and the decay of a step (lr * wd * w ~ 1e-5..1e-4 here), are far above the float noise of the comparison)
LR, WEIGHT_DECAY, BETA2, MAX_GRAD_NORM, MIN_LR = 1e-3, 1.0, 0.95, 1.0, 0.1


@pytest.fixture
def fresh_accelerate_state():
    """trl's trainers and the native loop both initialise accelerate's process-wide state: reset it around
    each test (and between the two backends inside a test)."""
    _reset_accelerate()
    yield
    _reset_accelerate()


def _reset_accelerate():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The handmade conversations + 20 generated ones (system prompts, multi-turn, reasoning), loaded and
    normalised by `load_records` exactly as both recipe backends read them."""
    path = tmp_path_factory.mktemp("sft_parity") / "sft.jsonl"
    rows = HANDMADE + sft_conversations(20)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return load_records("sft", str(path))


def base_model(tiny_model_dir):
    from minimind_hf import MiniMindForCausalLM

    return MiniMindForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32
    )


def matched_trainer_class():
    """trl's SFTTrainer with the native loop's AdamW groups (no decay on the embedding either)."""
    from trl import SFTTrainer

    class MatchedSFTTrainer(SFTTrainer):
        def get_decay_parameter_names(self, model):
            return [n for n in super().get_decay_parameter_names(model) if "embed" not in n]

    return MatchedSFTTrainer


def trl_trainer(
    model, tok, records, out, *, packing, max_length, batch_size=64, steps=1, matched=False, optimizer="adamw"
):
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    args = TrlSFTConfig(
        output_dir=str(out),
        assistant_only_loss=True,
        packing=packing,
        packing_strategy="bfd",
        max_length=max_length,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        learning_rate=LR,
        weight_decay=WEIGHT_DECAY,
        adam_beta2=BETA2,
        max_grad_norm=MAX_GRAD_NORM,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": MIN_LR},
        warmup_steps=0,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,  # trl's default autocasts to bf16 even on CPU
        seed=0,
        disable_tqdm=True,
    )
    if optimizer == "muon":
        from minimind_hf.recipes.common import native_optimizer

        cls = native_optimizer(SFTTrainer, "muon")
    else:
        cls = matched_trainer_class() if matched else SFTTrainer
    # the sft recipe's `sft_messages`: trl's conversational column is `messages`
    return cls(
        model=model,
        args=args,
        train_dataset=records.rename_column("conversations", "messages"),
        processing_class=tok,
    )


def trl_sequences(dataset) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of every conversation in trl's prepared train dataset (packed rows split back)."""
    out = []
    for row in dataset:
        ids, labels = list(row["input_ids"]), list(row["labels"])
        at = 0
        for n in row.get("seq_lengths") or [len(ids)]:
            out.append((ids[at : at + n], labels[at : at + n]))
            at += n
    return out


def our_sequences(records, tok, max_length) -> list[tuple[list[int], list[int]]]:
    enc = tokenize_conversations(records, tok, max_length)
    return [(list(r["input_ids"]), list(r["labels"])) for r in enc]


def has_label(seq) -> bool:
    return any(t != IGNORE_INDEX for t in seq[1][1:])


# ------------------------------------------------------------------------------------------------ (a) labels
@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("max_length", [4096, 96], ids=["whole", "truncated"])
def test_labels_match_trl(
    tiny_model_dir, tok, records, tmp_path, packing, max_length, fresh_accelerate_state
):
    trainer = trl_trainer(
        base_model(tiny_model_dir), tok, records, tmp_path / "trl", packing=packing, max_length=max_length
    )
    theirs = trl_sequences(trainer.train_dataset)
    ours = our_sequences(records, tok, max_length)
    if not packing:
        assert theirs == ours  # same rows, same order, same ids, same labels (truncation and dropping agree)
    else:
        # by design: trl's bfd packing keeps conversations truncated to no assistant token; we drop them
        trained = [s for s in theirs if has_label(s)]
        assert sorted(trained) == sorted(ours)
        if max_length == 4096:
            assert len(trained) == len(theirs) == len(records)
        else:
            assert len(theirs) == len(records) and 0 < len(trained) < len(theirs)
    if max_length == 4096:
        # what "assistant-only" means here, on both sides (they are equal): generated text + <|im_end|>
        by_ids = {
            tuple(encode_conversation(tok, r["conversations"], r["tools"])["input_ids"]): i
            for i, r in enumerate(records)
        }
        for ids, labels in ours:
            assert labels[0] == IGNORE_INDEX  # a conversation's first token is never a target
            rec = records[by_ids[tuple(ids)]]
            text = tok.decode([t for t in labels if t != IGNORE_INDEX])
            n_assistant = sum(m["role"] == "assistant" for m in rec["conversations"])
            assert text.count("<|im_end|>") == n_assistant and "<|im_start|>" not in text
            assert "<tool_response>" not in text and "system" not in text
        tool_ids, tool_labels = ours[3]
        tool_text = tok.decode([t for t in tool_labels if t != IGNORE_INDEX])
        assert tool_text.startswith('<tool_call>\n{"name": "get_weather"') and "21 degrees" in tool_text
        assert "Current weather of a city" in tok.decode(tool_ids)  # the tools block is in the prompt
        assert tok.decode([t for t in ours[2][1] if t != IGNORE_INDEX]).startswith(
            "7 times 6 is 42.\n</think>"
        )


def test_labels_match_trl_on_real_data(tiny_model_dir, tok, shared_data, tmp_path, fresh_accelerate_state):
    """The real SFT mix (64 conversations, many truncated at 256 tokens): identical rows, in order."""
    path = shared_data / "sft" / "sft_mix.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    records = load_records("sft", str(path)).select(range(64))
    trainer = trl_trainer(
        base_model(tiny_model_dir), tok, records, tmp_path / "trl", packing=False, max_length=256
    )
    ours = our_sequences(records, tok, 256)
    assert trl_sequences(trainer.train_dataset) == ours
    assert any(len(ids) == 256 for ids, _ in ours)  # truncation exercised


# ------------------------------------------------------------------------------------ (b) loss and gradients
@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed_padding_free"])
def test_loss_and_gradients_match_trl(
    tiny_model_dir, tok, records, tmp_path, packing, fresh_accelerate_state
):
    """One batch holding every conversation, through trl's compute_loss and ours.

    Tolerances (fp32 CPU; observed while writing this: loss diff ~5e-7, gradient diffs <= 5e-7 of each
    tensor's largest entry): loss 1e-5 absolute; every parameter gradient rtol 1e-4 / atol 1e-7.
    trl scores tokens with its fused chunked LM head (log-probs of labelled positions only), we with the
    model's cross-entropy over all logits; trl attends with a padding mask (padded) or one flattened row
    with per-conversation positions (padding-free), we with positions only. Same maths, other float order."""
    max_length = 1024
    model = base_model(tiny_model_dir)
    ours_model = copy.deepcopy(model)  # before trl patches the forward with its fused LM head
    trainer = trl_trainer(model, tok, records, tmp_path / "trl", packing=packing, max_length=max_length)
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(rows)
    num_items = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}

    enc = tokenize_conversations(records, tok, max_length)
    our_rows = pack_sequences(enc, max_length, tok.pad_token_id) if packing else enc.with_format(None)
    cfg = SFTConfig(data=[], output_dir=str(tmp_path / "native"), max_length=max_length, packing=packing)
    algo = SFT(
        cfg, ours_model, tok, our_rows, collate_fn=partial(collate_rows, pad_token_id=tok.pad_token_id)
    )
    ours = algo.collate_fn([our_rows[i] for i in range(len(our_rows))])
    n = algo.num_items(ours)
    ours_model.train()
    our_loss, _ = algo.compute_loss(ours_model, ours, torch.tensor(float(n)))
    our_loss.backward()

    # same trained tokens, laid out differently
    if packing:
        assert (
            batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        )  # padding-free: one flat row
        assert ours["input_ids"].shape == (len(our_rows), max_length) and len(our_rows) > 1
        assert sorted(_segments(batch, tok.pad_token_id)) == sorted(_segments(ours, tok.pad_token_id))
    else:
        assert torch.equal(batch["input_ids"], ours["input_ids"]) and torch.equal(
            batch["labels"], ours["labels"]
        )
        assert "attention_mask" in batch and "attention_mask" not in ours
    assert (
        n
        == int(num_items)
        == sum(sum(t != IGNORE_INDEX for t in lab[1:]) for _, lab in our_sequences(records, tok, max_length))
    )
    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert (
        abs(our_loss.item() - math.log(len(tok))) < 0.5
    )  # random init: close to uniform, not a degenerate 0
    for name, p in ours_model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        torch.testing.assert_close(p.grad, trl_grads[name], rtol=1e-4, atol=1e-7, msg=name)


def _segments(batch, pad_id: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(ids, labels) of each conversation of a packed batch (positions restart at 0). A conversation's first
    label is -100 on both sides (trl's collator masks position 0, our packer too). Our rows end in pad tokens
    (label -100, positions continuing the last conversation), trl's flat row has none: cut them off."""
    out = []
    for ids, labels, pos in zip(
        batch["input_ids"].tolist(), batch["labels"].tolist(), batch["position_ids"].tolist(), strict=True
    ):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for a, b in zip(starts, starts[1:], strict=False):
            seg_ids, seg_labels = ids[a:b], labels[a:b]
            assert seg_labels[0] == IGNORE_INDEX
            while seg_ids and seg_ids[-1] == pad_id and seg_labels[-1] == IGNORE_INDEX:
                seg_ids, seg_labels = seg_ids[:-1], seg_labels[:-1]
            out.append((tuple(seg_ids), tuple(seg_labels)))
    return out


# -------------------------------------------------------------------------------------- (c) optimizer steps
# weights after the steps: all but a few elements within WEIGHT_ATOL, every element within WEIGHT_ATOL_MAX
WEIGHT_ATOL, WEIGHT_OUTLIERS, WEIGHT_ATOL_MAX = 1e-6, 1e-3, 3e-5
# optimizer: muon, of each tensor's largest movement: observed <= 2.7% on one machine, 7.1% (the embedding, an
# AdamW weight whose gradient runs through the bf16-orthogonalised matrices) on another; a real mismatch (a
# wrong rate, group or decay) is of the order of the movement itself
MUON_SHARE = 0.15


def _native_groups(model) -> list[set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [{names[id(p)] for p in g["params"]} for g in default_param_groups(model, WEIGHT_DECAY)]


def _trl_groups(trainer) -> list[set[str]]:
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    return [{names[id(p)] for p in g["params"]} for g in trainer.optimizer.param_groups if g["params"]]


@pytest.mark.parametrize(
    ("packing", "matched", "steps", "optimizer"),
    [(True, True, 2, "adamw"), (False, True, 2, "adamw"), (True, False, 1, "adamw"), (True, True, 2, "muon")],
    ids=["packed-matched", "padded-matched", "packed-trl_default", "packed-muon"],
)
def test_optimizer_steps_match_trl(
    tiny_model_dir, tok, records, tmp_path, packing, matched, steps, optimizer, fresh_accelerate_state
):
    """`steps` optimizer steps, each on one batch holding every conversation (so both loops see the same
    batch whatever their sampling), AdamW lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1, clipping at
    1.0, cosine to 0.1 * lr (step 1 at lr, step 2 at 0.55 lr).

    Tolerances: per-step loss and grad norm 1e-5 absolute, lr 1e-12. Weights: at most 0.1 % of each tensor's
    elements differ by more than 1e-6 (0.06 % of how far every weight moved, lr x (1 + 0.55) ~ 1.6e-3, and far
    below one step's extra decay, lr * wd * |w| ~ 2e-5 typical, so a grouping difference cannot hide), and
    none by more than 3e-5 (2 % of the movement). Why outliers at all: Adam divides each gradient entry by its
    own magnitude, so for the few entries whose gradient is near zero (~1e-9, the size of the float noise
    between the two backends' summation orders) the normalised update differs by a visible fraction of lr.
    Observed: 2 of 12288 entries of one matrix at 1e-5, everything else <= 8e-7.
    `matched=False` is trl as the recipe runs it: every weight but the embedding agrees, and the embedding
    differs by exactly trl's extra decay, lr * weight_decay * w0 (asserted, one step). `optimizer="muon"`: the
    recipe's `optimizer: muon` under trl (`recipes.common.native_optimizer`) against the native loop's Muon +
    AdamW: the same optimizer split and settings, losses and grad norms within 1e-4, and weights within 5% of
    how far each moved (Muon's bf16 Newton-Schulz spreads the backends' float noise over whole updates)."""
    max_length = 512  # the tool conversation is truncated (still has labels): nothing dropped on either side
    model = base_model(tiny_model_dir)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    ours_model = copy.deepcopy(model)

    # native: our loop, one batch = every packed row / every conversation
    enc = tokenize_conversations(records, tok, max_length)
    rows = pack_sequences(enc, max_length, tok.pad_token_id) if packing else enc.with_format(None)
    cfg = SFTConfig(
        data=[],
        output_dir=str(tmp_path / "native"),
        max_length=max_length,
        packing=packing,
        learning_rate=LR,
        weight_decay=WEIGHT_DECAY,
        adam_beta2=BETA2,
        max_grad_norm=MAX_GRAD_NORM,
        min_lr_ratio=MIN_LR,
        warmup_steps=0,
        batch_size=len(rows),
        max_steps=steps,
        mixed_precision="no",
        report_to=["none"],
        progress=False,
        resume="never",
        log_every=1,
        optimizer=optimizer,
    )
    result = train(
        cfg, SFT(cfg, ours_model, tok, rows, collate_fn=partial(collate_rows, pad_token_id=tok.pad_token_id))
    )
    log = [json.loads(line) for line in (tmp_path / "native" / "train_log.jsonl").read_text().splitlines()]
    native_log = [r for r in log if "loss" in r]
    _reset_accelerate()

    # trl: SFTTrainer.train(); per_device_train_batch_size covers every (packed) row, so each epoch is one
    # step
    trainer = trl_trainer(
        model,
        tok,
        records,
        tmp_path / "trl",
        packing=packing,
        max_length=max_length,
        batch_size=len(rows) + len(records),
        steps=steps,
        matched=matched,
        optimizer=optimizer,
    )
    trainer.train()
    trl_log = [r for r in trainer.state.log_history if "loss" in r]

    assert result.steps == len(native_log) == len(trl_log) == steps
    # Muon's Newton-Schulz runs in bf16: the ~1e-9 float noise between the backends' gradients can flip a
    # rounding, which moves step 2's loss by ~1e-5
    loss_tol = 1e-4 if optimizer == "muon" else 1e-5
    for ours, theirs in zip(native_log, trl_log, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=loss_tol)
        assert ours["lr"] == pytest.approx(theirs["learning_rate"], abs=1e-12)
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], abs=loss_tol)
    if steps == 2:
        assert trl_log[1]["learning_rate"] == pytest.approx(LR * (MIN_LR + (1 - MIN_LR) * 0.5))

    # the AdamW groups: trl's default decays the (tied) embedding, ours never does
    ours_groups, trl_groups = _native_groups(ours_model), _trl_groups(trainer)
    if optimizer == "muon":  # Muon's matrices, then AdamW's decayed and undecayed rest: the same split
        from minimind_hf.native.optim import MuonWithAdamW

        assert isinstance(trainer.optimizer.optimizer, MuonWithAdamW)
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        by_decay = [
            [g for g in trainer.optimizer.param_groups if (g["weight_decay"] > 0) == d] for d in (1, 0)
        ]
        trl_groups = [{names[id(p)] for g in gs for p in g["params"]} for gs in by_decay]
    decayed_by_trl_only = trl_groups[0] - ours_groups[0]
    assert ours_groups[1] - trl_groups[1] == decayed_by_trl_only
    assert decayed_by_trl_only == (set() if matched else {"model.embed_tokens.weight"})
    assert all(
        "norm" in n or p.ndim < 2 or "embed" in n
        for n, p in ours_model.named_parameters()
        if n in ours_groups[1]
    )

    theirs = dict(trainer.model.named_parameters())
    for name, p in ours_model.named_parameters():
        assert (p - w0[name]).abs().max() > 0.5 * LR, name  # every weight moved by about an Adam step
        expected = p.detach()
        if name in decayed_by_trl_only:  # AdamW decoupled decay: w <- w - lr * wd * w, then the Adam update
            expected = expected - LR * WEIGHT_DECAY * w0[name]
            assert ((theirs[name] - p).abs() > WEIGHT_ATOL).float().mean() > 0.5  # real, not noise
        diff = (theirs[name].detach() - expected).abs()
        if optimizer == "muon":
            # bf16 Newton-Schulz: a rounding flipped by the backends' float noise spreads over the whole
            # orthogonalised update, so the weights agree to a share of how far they moved, not to 1e-6
            moved = (p.detach() - w0[name]).abs().max()
            assert diff.max() <= MUON_SHARE * moved, (name, (diff.max() / moved).item())
            continue
        assert diff.max() <= WEIGHT_ATOL_MAX, (name, diff.max().item())
        assert (diff > WEIGHT_ATOL).float().mean() <= WEIGHT_OUTLIERS, (name, int((diff > WEIGHT_ATOL).sum()))
