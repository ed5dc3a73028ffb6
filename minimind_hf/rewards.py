"""Rewards for RL (GRPO / PPO), picked by name from a registry (open-r1 style).

Every reward is a function ``(completions: list[str | list[dict]], **kwargs) -> list[float]``, the calling
convention of trl's ``GRPOTrainer`` (``completions`` are strings, or conversational ``[{"role": "assistant",
"content": ...}]`` lists; dataset columns such as ``ground_truth`` arrive as keyword lists, one value per
completion). The native trainers call them the same way.

=================  ===========================================================================================
name               reward
=================  ===========================================================================================
``accuracy``       1.0 if the final number of the completion equals ``ground_truth`` numerically, else 0.0
``think_format``   1.0 if the completion is ``<think>\\n...\\n</think>\\n\\n<answer>`` (see below), else 0.0
``length``         DAPO soft over-long penalty: 0 up to ``max_length - cache``, then linear down to -1
``repetition``     ``max_penalty * (1 - distinct n-grams / n-grams)``, n-grams over words / CJK characters
``reward_model``   the score (logit 0) of any ``AutoModelForSequenceClassification`` on the conversation
``gt_coverage``    the share of the ground-truth values (a list ``gt``, or one value) found in the final
                   answer
``tool_use``       tool calls that ran without error vs. the number the ground truth needs (+0.5 / -0.5 a gap)
``tool_format``    -0.5 per unbalanced ``<tool_call>`` tag and per call block that does not parse (0 if clean)
``unfinished``     -1.0 when the rollout ran out of turns or tokens before a final answer, else 0.0
=================  ===========================================================================================

The last four score multi-turn rollouts: they read the ``tool_calls``, ``transcripts`` and ``finished``
columns that `minimind_hf.native.rollout.score` passes (the native ``agent`` stage); without them they raise.
A list ``gt`` is stored as a JSON array in ``ground_truth`` (:func:`ground_truth_values` reads it back);
``accuracy`` accepts any of its values.

``get_reward("length", max_length=256)`` binds options; ``get_reward("nope")`` raises ``KeyError`` listing
the valid names. ``get_rewards(["accuracy", "think_format"])`` returns a list for ``reward_funcs=``.

Final-answer extraction (:func:`extract_answer`), in order, on the text after the last ``</think>`` (the
whole text if there is none, or if nothing is found after it):

1. the content of the last ``\\boxed{...}`` (nested braces allowed, ``\\fbox`` too);
2. the number after the last ``#### `` (GSM8K);
3. the number after the last ``answer is`` / ``answer:`` (any case) or ``答案是`` / ``答案为`` / ``答案：``;
4. the last number in the text.

Number normalisation (:func:`parse_number`): Unicode NFKC (full-width digits, ``－``), then strip ``$``,
``\\$``, spaces, thousands commas (``1,234``), a trailing ``.``/``。``; ``\\frac{a}{b}``, ``\\dfrac{a}{b}``
and ``a/b`` become ``a / b``; a trailing ``%`` is dropped (``25%`` == ``25``, GSM8K answers are bare
numbers); ``-3``, ``3.50``, ``1e3`` parse as floats. Two numbers are equal when ``math.isclose`` with
``rel_tol=1e-6, abs_tol=1e-9`` (``12.0`` == ``12``). A ground truth that does not parse is compared as a
stripped string.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "REWARDS",
    "accuracy_reward",
    "extract_answer",
    "get_reward",
    "get_rewards",
    "length_penalty",
    "parse_number",
    "register_reward",
    "repetition_penalty",
    "ground_truth_values",
    "gt_coverage_reward",
    "reward_model_reward",
    "think_format_reward",
    "tool_format_reward",
    "tool_use_reward",
    "unfinished_reward",
]

RewardFn = Callable[..., list[float]]
REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make a reward available to :func:`get_reward` under ``name``."""

    def wrap(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = fn
        return fn

    return wrap


def get_reward(name: str, **options: Any) -> RewardFn:
    """The reward registered as ``name``, with keyword ``options`` bound (checked against its signature)."""
    if name not in REWARDS:
        raise KeyError(f"unknown reward {name!r}; valid rewards: {', '.join(sorted(REWARDS))}")
    fn = REWARDS[name]
    if not options:
        return fn
    params = inspect.signature(fn).parameters
    bad = [k for k in options if k not in params or params[k].kind is not inspect.Parameter.KEYWORD_ONLY]
    if bad:
        valid = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        raise TypeError(f"reward {name!r} has no option(s) {bad}; its options are {valid}")
    bound = functools.partial(fn, **options)
    functools.update_wrapper(bound, fn)  # trl logs rewards under fn.__name__
    return bound  # type: ignore[return-value]


def get_rewards(names: Sequence[str] | str, options: dict[str, dict] | None = None) -> list[RewardFn]:
    """Several rewards by name (a list or a comma-separated string); ``options[name]`` binds options."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    options = options or {}
    unknown = set(options) - set(names)
    if unknown:
        raise KeyError(f"options given for reward(s) not requested: {sorted(unknown)}")
    return [get_reward(n, **options.get(n, {})) for n in names]


# ----------------------------------------------------------------------------------------------------------
# Text helpers
# ----------------------------------------------------------------------------------------------------------


def completion_text(completion: str | list[dict] | dict) -> str:
    """The text of a completion: a string, or the content of the last message of a conversational one."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion.get("content") or ""
    if completion and isinstance(completion[-1], dict):
        return completion[-1].get("content") or ""
    return ""


_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?%?"
_NUMBER_RE = re.compile(_NUMBER)
_GSM8K_RE = re.compile(r"####\s*(" + _NUMBER + ")")
_ANSWER_IS_RE = re.compile(
    r"(?:answer\s*(?:is|:)|答案\s*(?:是|为|:))\s*[:：]?\s*\$?\s*(" + _NUMBER + ")", re.IGNORECASE
)
_FRAC_RE = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, or None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None  # unbalanced: the model stopped mid-answer


def _extract(text: str) -> str | None:
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    for pattern in (_GSM8K_RE, _ANSWER_IS_RE):
        hits = pattern.findall(text)
        if hits:
            return hits[-1]
    hits = _NUMBER_RE.findall(text)
    return hits[-1] if hits else None


def extract_answer(text: str) -> str | None:
    """The final answer string of a completion (module docstring: rules in order), or None."""
    text = unicodedata.normalize("NFKC", text)
    if "</think>" in text:
        found = _extract(text.rsplit("</think>", 1)[1])
        if found is not None:
            return found
    return _extract(text)


def parse_number(text: str | float | int | None) -> float | None:
    """A float from an answer string (module docstring: normalisation), or None if it is not a number."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    s = unicodedata.normalize("NFKC", str(text)).strip()
    s = _FRAC_RE.sub(r"(\1)/(\2)", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "%").replace("\\!", "")
    s = re.sub(r"\\text\{[^{}]*\}", "", s)
    s = re.sub(r"\s+", "", s).rstrip(".。")
    s = re.sub(r"(?<=\d),(?=\d{3}(?:\D|$))", "", s)  # thousands separators only
    s = s.removesuffix("%")
    m = re.fullmatch(r"\(?([-+]?[\d.]+(?:[eE][-+]?\d+)?)\)?/\(?([-+]?[\d.]+)\)?", s)
    try:
        if m:
            den = float(m.group(2))
            return float(m.group(1)) / den if den != 0 else None
        return float(s)
    except ValueError:
        return None


def ground_truth_values(truth: str | float | int | None) -> list[str]:
    """The ground truth as a list of values: a JSON array (how rl records store a list ``gt``) or one
    value."""
    if truth is None:
        return []
    text = str(truth).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            values = None
        if isinstance(values, list):
            return [str(v) for v in values]
    return [text]


def answers_match(predicted: str | None, truth: str | float | int) -> bool:
    """Numeric equality (``math.isclose``, rel 1e-6, abs 1e-9); string equality if the truth is not a
    number."""
    if predicted is None:
        return False
    p, t = parse_number(predicted), parse_number(truth)
    if t is None:  # a non-numeric ground truth: exact match after stripping
        return str(predicted).strip() == str(truth).strip()
    return p is not None and math.isclose(p, t, rel_tol=1e-6, abs_tol=1e-9)


# ----------------------------------------------------------------------------------------------------------
# Rewards
# ----------------------------------------------------------------------------------------------------------


@register_reward("accuracy")
def accuracy_reward(
    completions: list, ground_truth: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """1.0 when the extracted final number equals ``ground_truth`` (one per completion), else 0.0.

    A missing ground truth (None) scores 0.0 and is logged once per call."""
    if ground_truth is None:
        raise ValueError("the accuracy reward needs a `ground_truth` column (rl records have one)")
    out, missing = [], 0
    for completion, truth in zip(completions, ground_truth, strict=True):
        if truth is None:
            missing += 1
            out.append(0.0)
            continue
        predicted = extract_answer(completion_text(completion))
        out.append(1.0 if any(answers_match(predicted, t) for t in ground_truth_values(truth)) else 0.0)
    if missing:
        logger.warning(
            "accuracy reward: %d of %d completions have no ground_truth; scored 0", missing, len(out)
        )
    return out


# <think>\n{reasoning}\n</think>\n\n{answer}: exactly one think block, non-empty reasoning and answer.
_THINK_RE = re.compile(
    r"\A<think>\n(?P<reasoning>(?:(?!<think>|</think>).)*?\S(?:(?!<think>|</think>).)*?)\n"
    r"</think>\n\n(?P<answer>(?:(?!<think>|</think>).)*\S(?:(?!<think>|</think>).)*)\Z",
    re.DOTALL,
)


@register_reward("think_format")
def think_format_reward(
    completions: list, *, think_in_prompt: bool | None = None, **kwargs: Any
) -> list[float]:
    """1.0 for ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}`` (one block, non-empty parts, no stray tags).

    With ``open_thinking=True`` the generation prompt already ends in ``<think>\\n``, so the completion starts
    inside the block: ``think_in_prompt=True`` prepends ``<think>\\n`` before checking. ``None`` (default)
    decides per completion: prepend when the completion does not itself start with ``<think>``. A trailing
    ``<|im_end|>`` (if special tokens were kept) is ignored."""
    out = []
    for completion in completions:
        text = completion_text(completion).removesuffix("<|im_end|>")
        opened = think_in_prompt if think_in_prompt is not None else not text.startswith("<think>")
        if opened:
            text = "<think>\n" + text
        out.append(1.0 if _THINK_RE.match(text) else 0.0)
    return out


@register_reward("length")
def length_penalty(
    completions: list,
    *,
    max_length: int = 1024,
    cache: int = 256,
    completion_ids: Sequence[Sequence[int]] | None = None,
    **kwargs: Any,
) -> list[float]:
    """DAPO's soft over-long punishment, in ``[-1, 0]``.

    ``L`` is the token count when ``completion_ids`` is passed (trl and the native trainers pass it), else
    the character count. ``0`` if ``L <= max_length - cache``; ``-(L - (max_length - cache)) / cache`` up to
    ``max_length``; ``-1`` beyond."""
    if not 0 < cache <= max_length:
        raise ValueError(
            f"length reward: need 0 < cache <= max_length, got cache={cache}, max_length={max_length}"
        )
    lengths = (
        [len(ids) for ids in completion_ids]
        if completion_ids is not None
        else [len(completion_text(c)) for c in completions]
    )
    free = max_length - cache
    return [0.0 if n <= free else max(-1.0, -(n - free) / cache) for n in lengths]


_UNIT_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+|[^\s\w]", re.UNICODE)


def _units(text: str) -> list[str]:
    """Words for Latin text, single characters for CJK (no spaces to split on), punctuation separately."""
    out = []
    for tok in _UNIT_RE.findall(text.lower()):
        # [^\W_]+ also swallows runs of CJK with letters; split CJK characters out of mixed runs
        out.extend(re.findall(r"[\u3400-\u9fff\uf900-\ufaff]|[^\u3400-\u9fff\uf900-\ufaff]+", tok))
    return out


@register_reward("repetition")
def repetition_penalty(
    completions: list, *, ngram: int = 3, max_penalty: float = -1.0, **kwargs: Any
) -> list[float]:
    """``max_penalty * (1 - distinct / total)`` over the completion's n-grams
    (0 when shorter than ``ngram``)."""
    if max_penalty > 0:
        raise ValueError(f"repetition reward: max_penalty must be <= 0, got {max_penalty}")
    out = []
    for completion in completions:
        units = _units(completion_text(completion))
        grams = [tuple(units[i : i + ngram]) for i in range(len(units) - ngram + 1)]
        out.append(0.0 if not grams else max_penalty * (1.0 - len(set(grams)) / len(grams)))
    return out


@functools.lru_cache(maxsize=2)
def _load_reward_model(model: str, device: str | None):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rm = AutoModelForSequenceClassification.from_pretrained(model).eval()
    if device:
        rm.to(device)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rm.config.pad_token_id = tok.pad_token_id
    logger.info("reward model %s loaded (%d labels)", model, rm.config.num_labels)
    return tok, rm, torch


def _conversation(prompt: Any, completion: Any) -> list[dict]:
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    return list(prompt or []) + list(completion)


@register_reward("reward_model")
def reward_model_reward(
    completions: list,
    prompts: Sequence[Any] | None = None,
    *,
    model: str = "",
    batch_size: int = 8,
    max_length: int = 2048,
    device: str | None = None,
    **kwargs: Any,
) -> list[float]:
    """Score ``prompt + completion`` with ``AutoModelForSequenceClassification.from_pretrained(model)``.

    The conversation is rendered with the reward model's own chat template (plain ``role: content`` lines
    when it has none), truncated to ``max_length`` tokens, scored in batches; the reward is logit 0. The model
    is loaded once and cached. Bind the folder / hub name with ``get_reward("reward_model", model=...)``."""
    if not model:
        raise ValueError('reward_model needs a model: get_reward("reward_model", model="path/or/hub-name")')
    tok, rm, torch = _load_reward_model(model, device)
    prompts = prompts if prompts is not None else [None] * len(completions)
    texts = []
    for prompt, completion in zip(prompts, completions, strict=True):
        conv = _conversation(prompt, completion)
        if tok.chat_template:
            texts.append(tok.apply_chat_template(conv, tokenize=False))
        else:
            texts.append("\n".join(f"{m['role']}: {m.get('content') or ''}" for m in conv))
    scores: list[float] = []
    padding_side, tok.padding_side = tok.padding_side, "right"
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(
                texts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
            ).to(rm.device)
            with torch.no_grad():
                logits = rm(**enc).logits  # (b, num_labels)
            scores.extend(logits[:, 0].float().tolist())
    finally:
        tok.padding_side = padding_side
    return scores


# ----------------------------------------------------------------------------------------------------------
# Multi-turn (tool-use) rewards: they need the rollout's columns
# ----------------------------------------------------------------------------------------------------------


def _rollout_column(kwargs: dict, name: str, reward: str) -> list:
    if kwargs.get(name) is None:
        raise ValueError(
            f"the {reward} reward needs the rollout's {name!r} column: run it on multi-turn rollouts "
            "(minimind_hf.native.rollout, the native agent stage)"
        )
    return kwargs[name]


def _contains(text: str, value: str) -> bool:
    """`value` appears in `text`: numerically among its numbers, or as a case-insensitive substring."""
    target = parse_number(value)
    if target is not None:
        numbers = (parse_number(m) for m in _NUMBER_RE.findall(unicodedata.normalize("NFKC", text)))
        return any(n is not None and math.isclose(n, target, rel_tol=1e-6, abs_tol=1e-9) for n in numbers)
    return bool(value.strip()) and value.strip().lower() in text.lower()


def _final_answer(text: str) -> str:
    """The text after the last ``</think>`` and the last ``</tool_call>``."""
    return text.split("</think>")[-1].split("</tool_call>")[-1]


@register_reward("gt_coverage")
def gt_coverage_reward(
    completions: list, ground_truth: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """The share of the ground-truth values found in the final answer (0 when the row has no ground truth)."""
    if ground_truth is None:
        raise ValueError("the gt_coverage reward needs a `ground_truth` column")
    out = []
    for completion, truth in zip(completions, ground_truth, strict=True):
        values = ground_truth_values(truth)
        answer = _final_answer(completion_text(completion))
        out.append(sum(_contains(answer, v) for v in values) / len(values) if values else 0.0)
    return out


@register_reward("tool_use")
def tool_use_reward(
    completions: list, ground_truth: Sequence[Any] | None = None, *, min_reward: float = -1.5, **kwargs: Any
) -> list[float]:
    """+0.5 when the row made exactly as many successful tool calls as its ground truth has values (at least
    one), else -0.5 per call missing, extra or failed (a response starting with ``error:``), down to
    `min_reward`."""
    calls = _rollout_column(kwargs, "tool_calls", "tool_use")
    truths = ground_truth if ground_truth is not None else [None] * len(calls)
    out = []
    for row_calls, truth in zip(calls, truths, strict=True):
        ok = sum(not str(c.get("response", "")).startswith("error:") for c in row_calls)
        failed = len(row_calls) - ok
        gap = abs(ok - max(1, len(ground_truth_values(truth)))) + failed
        out.append(0.5 if gap == 0 else max(min_reward, -0.5 * gap))
    return out


_CALL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


@register_reward("tool_format")
def tool_format_reward(completions: list, **kwargs: Any) -> list[float]:
    """-0.5 per unbalanced ``<tool_call>`` / ``</tool_call>`` tag and per block whose body is not a call
    (``{"name": ..., "arguments": {...}}``), over every sampled turn; 0.0 for a clean row."""
    from .serve.parser import parse_tool_call_body

    out = []
    for text in _rollout_column(kwargs, "transcripts", "tool_format"):
        bad = abs(text.count("<tool_call>") - text.count("</tool_call>"))
        bad += sum(parse_tool_call_body(body) is None for body in _CALL_BLOCK.findall(text))
        out.append(-0.5 * bad)
    return out


@register_reward("unfinished")
def unfinished_reward(completions: list, *, penalty: float = -1.0, **kwargs: Any) -> list[float]:
    """`penalty` when the rollout stopped before a final answer (turn or token budget spent), else 0.0."""
    return [0.0 if done else penalty for done in _rollout_column(kwargs, "finished", "unfinished")]
