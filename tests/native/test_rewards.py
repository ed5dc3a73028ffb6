"""Rewards: answer extraction and normalisation, think format, length / repetition penalties, the registry,
and a reward from a sequence-classification model folder."""

from __future__ import annotations

import pytest

from minimind_hf import rewards as R
from minimind_hf.data import demo_corpus


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the total is \\boxed{42}.", "42"),
        ("first \\boxed{1} then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
        ("5 + 3 = 8. The answer is 8.", "8"),
        ("小明有 5 个苹果，又买了 3 个。答案是 8。", "8"),
        ("答案：1,234", "1,234"),
        ("We get 3 then 7 then 12", "12"),
        ("<think>\nmaybe 5? or 6\n</think>\n\nIt is 7.", "7"),
        ("<think>\nthe answer is 9\n</think>\n\nno number here", "9"),  # falls back to the whole text
        ("no numbers at all", None),
        ("The answer is -3.5.", "-3.5"),
        ("答案是 ４２。", "42"),  # full-width digits (NFKC)
    ],
)
def test_extract_answer(text, expected):
    assert R.extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, value",
    [
        ("1,234", 1234.0),
        ("12.0", 12.0),
        ("$5", 5.0),
        ("25%", 25.0),
        ("3/4", 0.75),
        ("\\frac{3}{4}", 0.75),
        ("\\dfrac{1}{2}", 0.5),
        ("-7.", -7.0),
        ("1e3", 1000.0),
        ("abc", None),
        ("1/0", None),
        (" 8。", 8.0),
    ],
)
def test_parse_number(text, value):
    assert R.parse_number(text) == value


def test_accuracy_reward_on_demo_corpus_and_gsm8k_styles():
    probs = demo_corpus.heldout_problems(6)
    right = [
        f"思考一下。答案是 {p['answer']}。"
        if p["lang"] == "zh"
        else f"Let me think. The answer is {p['answer']}."
        for p in probs
    ]
    wrong = [f"The answer is {int(float(p['answer'])) + 1}." for p in probs]
    truths = [p["answer"] for p in probs]
    assert R.accuracy_reward(right, ground_truth=truths) == [1.0] * 6
    assert R.accuracy_reward(wrong, ground_truth=truths) == [0.0] * 6
    assert R.accuracy_reward(
        ["#### 1,000", "\\boxed{0.5}", "It's 12.00", "no idea"], ground_truth=["1000", "1/2", "12", "3"]
    ) == [1.0, 1.0, 1.0, 0.0]
    # conversational completions (trl's form) and a missing ground truth
    assert R.accuracy_reward(
        [[{"role": "assistant", "content": "答案是 5。"}], "5"], ground_truth=["5", None]
    ) == [1.0, 0.0]


def test_think_format_reward():
    good = "<think>\nadd them\n</think>\n\nThe answer is 8."
    assert R.think_format_reward([good]) == [1.0]
    # the prompt already ends in "<think>\n" (open_thinking): the completion starts inside the block
    assert R.think_format_reward(["add them\n</think>\n\nThe answer is 8.<|im_end|>"]) == [1.0]
    assert R.think_format_reward(["add them\n</think>\n\nThe answer is 8."], think_in_prompt=False) == [0.0]
    bad = [
        "The answer is 8.",  # no block
        "<think>\n\n</think>\n\nThe answer is 8.",  # empty reasoning
        "<think>\nadd\n</think>\n\n",  # empty answer
        "<think>\nadd\n</think>\nThe answer is 8.",  # one newline only
        "<think>\na\n</think>\n\nb<think>\nc\n</think>\n\nd",  # two blocks
    ]
    assert R.think_format_reward(bad) == [0.0] * len(bad)


def test_length_and_repetition_penalties():
    ids = [[0] * n for n in (10, 20, 25, 40)]
    assert R.length_penalty(["x"] * 4, max_length=30, cache=10, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0]
    assert R.length_penalty(["a" * 25], max_length=30, cache=10) == [-0.5]  # characters without ids
    rep = R.repetition_penalty(
        ["the cat sat on the mat", "ha ha ha ha ha ha", "一二一二一二一二", "hi"], ngram=2
    )
    assert rep[0] == 0.0 and rep[3] == 0.0
    assert rep[1] == pytest.approx(-(1 - 1 / 5))  # 5 bigrams, 1 distinct
    assert rep[2] == pytest.approx(-(1 - 2 / 7))  # CJK split per character: 7 bigrams, 2 distinct


def test_registry_names_options_and_errors():
    assert {"accuracy", "think_format", "length", "repetition", "reward_model"} <= set(R.REWARDS)
    with pytest.raises(KeyError, match="valid rewards: accuracy"):
        R.get_reward("acuracy")
    f = R.get_reward("length", max_length=30, cache=10)
    assert f.__name__ == "length_penalty"  # trl logs rewards by __name__
    assert f(["x"], completion_ids=[[0] * 25]) == [-0.5]
    with pytest.raises(TypeError, match="options are"):
        R.get_reward("length", max_len=3)
    funcs = R.get_rewards("accuracy, think_format")
    assert [fn.__name__ for fn in funcs] == ["accuracy_reward", "think_format_reward"]
    with pytest.raises(KeyError, match="not requested"):
        R.get_rewards(["accuracy"], {"length": {"max_length": 3}})


def test_reward_model_reward_scores_with_any_sequence_classifier(tmp_path, tiny_tokenizer):
    import torch
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    tok = tiny_tokenizer
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    rm = Qwen3ForSequenceClassification(cfg).eval()
    rm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reward = R.get_reward("reward_model", model=str(tmp_path), batch_size=2)
    prompts = [[{"role": "user", "content": "1+1=?"}]] * 3
    completions = ["答案是 2。", "The answer is 3.", "hello"]
    scores = reward(completions, prompts=prompts)
    # the same numbers as scoring the rendered conversation directly
    expected = []
    for p, c in zip(prompts, completions, strict=True):
        text = tok.apply_chat_template(p + [{"role": "assistant", "content": c}], tokenize=False)
        with torch.no_grad():
            expected.append(
                rm(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
            )
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) == 3
    with pytest.raises(ValueError, match="needs a model"):
        R.get_reward("reward_model")(["x"])


def test_agent_rewards_by_hand():
    from minimind_hf.rewards import get_reward

    coverage = get_reward("gt_coverage")
    truths = ['["28", "sunny"]', "42", '["7.21"]']
    texts = ["<tool_call>...</tool_call>It is 28 C and Sunny.", "The answer is 41.", "rate 7.210"]
    assert coverage(texts, ground_truth=truths) == [1.0, 0.0, 1.0]
    assert coverage(["only 28 here"], ground_truth=['["28", "sunny"]']) == [0.5]

    ok, bad = {"name": "calculator", "response": "42"}, {"name": "calculator", "response": "error: x"}
    tool_use = get_reward("tool_use")
    calls = [[ok], [], [ok, ok], [bad], [ok, ok]]
    gts = ["42", "42", "42", "42", '["1", "2"]']
    assert tool_use(["" for _ in calls], ground_truth=gts, tool_calls=calls) == [0.5, -0.5, -0.5, -1.0, 0.5]

    fmt = get_reward("tool_format")
    transcripts = [
        '<tool_call>\n{"name": "c", "arguments": {}}\n</tool_call>',
        "<tool_call>\nnot json\n</tool_call>",
        "<tool_call>",
        "plain",
    ]
    assert fmt(["" for _ in transcripts], transcripts=transcripts) == [0.0, -0.5, -0.5, 0.0]

    unfinished = get_reward("unfinished", penalty=-0.5)
    assert unfinished(["", ""], finished=[True, False]) == [0.0, -0.5]
    with pytest.raises(ValueError, match="rollout's 'tool_calls' column"):
        tool_use(["x"], ground_truth=["1"])
