"""A small built-in Chinese/English corpus that we generate ourselves, for the quickstart.

Everything here is produced by seeded ``random.Random`` generators from template tables in this file:
no downloads and no third-party text. The corpus is designed so that a ~1-3M-parameter model can
learn something *checkable* in a few CPU minutes.

Task families (each in Chinese and English, answers are plain integer strings):

* ``add`` / ``sub`` / ``mul``: 1-2 digit addition and subtraction (non-negative results), 2-9 times tables.
* ``convert``: m<->cm, kg<->g, h<->min, min<->s, 元<->角 with small values
  (``3 米等于多少厘米？`` -> ``300``).
* ``word``: one- and two-step word problems with tiny numbers (apples, books, 元).
* facts and chit-chat (not graded): greetings, "who are you" (MiniMind), days of the week, colours,
  opposites, counting, odd/even, unit definitions.

Every math answer given by the assistant ends with a fixed phrase that a reward can parse:
``答案是 68。`` (Chinese) or ``The answer is 68.`` (English).

**Held-out split.** Each math problem has a canonical, language- and template-independent ``key``
(e.g. ``("add", 23, 45)`` for both ``23 + 45`` and ``45 + 23``; ``("convert", "m-cm", 3)`` for both
directions). A key is *reserved* for evaluation when a stable hash of it falls in bucket 0 of
``HELDOUT_BUCKETS`` (:func:`is_heldout_key`). Training generators (pretrain, SFT, RL) only ever emit
unreserved keys and :func:`heldout_problems` only reserved ones, so held-out problems are disjoint from
training problems for *any* sizes and seeds, across languages and phrasings. Intermediate facts inside
worked solutions (``3 + 5 = 8`` inside ``23 + 45``) are not problems and are not filtered. Unit
definitions (value 1, ``1 米 = 100 厘米``) are facts, never problems.

Default sizes (:data:`DEFAULT_SIZES`) and what :func:`write_demo_corpus` produces with them (~2 s):
``pretrain.jsonl`` 12,000 docs (~2.8M characters; ~40-500 chars each, median ~240),
``sft.jsonl`` 6,000 conversations (~0.74M characters of message text; ~33% multi-turn, ~29% with a system
prompt, ~33% with ``reasoning_content``, ~88% contain a graded math answer), ``rl.jsonl`` 2,000 prompts,
``heldout.jsonl`` 200 problems. This is sized for tokenizer training plus a few CPU minutes of
pretraining; pass larger ``sizes`` for longer runs. Rows are de-duplicated: exact repeats are re-drawn
(0.8% of pretrain draws, 8% of RL draws, 23% of SFT draws - 94% of those are single-turn chit-chat or
fact questions, whose template space is small), so the files contain no duplicate rows.
About half of every file is Chinese (``ZH_RATIO``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_SIZES",
    "HELDOUT_BUCKETS",
    "Problem",
    "heldout_problems",
    "is_heldout_key",
    "math_problems",
    "novel_problems",
    "dpo_pairs",
    "pretrain_texts",
    "rl_prompts",
    "sft_conversations",
    "write_demo_corpus",
]

HELDOUT_BUCKETS = 10  # one key in ten is reserved for evaluation
ZH_RATIO = 0.5
DEFAULT_SIZES: dict[str, int] = {
    "pretrain": 12_000,
    "sft": 6_000,
    "tools": 2_000,
    "rl": 2_000,
    "dpo": 1_000,
    "heldout": 200,
}
_FAMILY_WEIGHTS = {"add": 3, "sub": 3, "mul": 2, "convert": 2, "word": 3}


def is_heldout_key(key: tuple) -> bool:
    """True if the canonical problem ``key`` is reserved for held-out evaluation (stable across runs)."""
    digest = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HELDOUT_BUCKETS == 0


@dataclass
class Problem:
    """One verifiable math problem. ``meta`` holds the operands so answers can be re-checked independently:
    ``{"expr": [a, "+", b, ...]}`` for arithmetic and word problems, ``{"units", "value", "to_small"}`` for
    conversions (``value`` is the count of the *larger* unit)."""

    family: str
    lang: str
    question: str
    answer: str
    key: tuple
    equation: str  # one-line equation ending in the answer, e.g. "5 + 3 - 2 = 6"
    steps: list[str]
    meta: dict = field(default_factory=dict)
    story_end: str = ""  # declarative closing sentence, word problems only

    def explanation(self) -> str:
        return ("" if self.lang == "zh" else " ").join(self.steps)

    def answer_line(self) -> str:
        return f"答案是 {self.answer}。" if self.lang == "zh" else f"The answer is {self.answer}."

    def short(self) -> str:
        return self.equation + ("。" if self.lang == "zh" else ".")


def _zh_en(lang: str, zh: str, en: str) -> str:
    return zh if lang == "zh" else en


# ----------------------------------------------------------------------------------------------- arithmetic
_ARITH_TEMPLATES = {
    "add": {
        "zh": [
            "{a} + {b} = ？",
            "计算 {a} 加 {b}。",
            "{a} 加 {b} 等于多少？",
            "请算一算：{a} + {b} 是多少？",
            "{a} 和 {b} 的和是多少？",
            "{a} 加上 {b} 是多少？",
            "把 {a} 和 {b} 加起来是多少？",
            "求 {a} 加 {b} 的结果。",
            "{a} 再加 {b} 得多少？",
        ],
        "en": [
            "{a} + {b} = ?",
            "What is {a} plus {b}?",
            "Compute {a} + {b}.",
            "Add {a} and {b}.",
            "What is the sum of {a} and {b}?",
            "What do {a} and {b} add up to?",
            "How much is {a} and {b} together?",
            "What is {b} added to {a}?",
            "Work out {a} + {b}.",
        ],
    },
    "sub": {
        "zh": [
            "{a} - {b} = ？",
            "计算 {a} 减 {b}。",
            "{a} 减去 {b} 等于多少？",
            "{a} 比 {b} 多多少？",
            "请算一算：{a} - {b} 是多少？",
            "从 {a} 中减去 {b}，得多少？",
            "{a} 去掉 {b} 还剩多少？",
            "求 {a} 减 {b} 的差。",
            "{a} 与 {b} 的差是多少？",
        ],
        "en": [
            "{a} - {b} = ?",
            "What is {a} minus {b}?",
            "Subtract {b} from {a}.",
            "How much greater is {a} than {b}?",
            "Compute {a} - {b}.",
            "What is {a} take away {b}?",
            "What is left when you take {b} from {a}?",
            "Find the difference between {a} and {b}.",
            "Work out {a} - {b}.",
        ],
    },
    "mul": {
        "zh": [
            "{a} × {b} = ？",
            "计算 {a} 乘 {b}。",
            "{a} 乘以 {b} 等于多少？",
            "{a} 和 {b} 的积是多少？",
            "{b} 个 {a} 相加是多少？",
            "求 {a} 与 {b} 的乘积。",
            "{a} 的 {b} 倍是多少？",
            "{a} 乘上 {b} 得多少？",
            "每份 {a} 个，{b} 份一共多少个？",
        ],
        "en": [
            "{a} × {b} = ?",
            "What is {a} times {b}?",
            "Multiply {a} by {b}.",
            "What is the product of {a} and {b}?",
            "What is {b} groups of {a}?",
            "What is {a} multiplied by {b}?",
            "What do you get if you multiply {a} and {b}?",
            "How much is {b} lots of {a}?",
            "Work out {a} × {b}.",
        ],
    },
}

# Composed training questions: an operation phrase inside a question frame ("What is {x}?" with "{a} take away
# {b}"), so the vocabulary of each operation appears in many sentence frames and the model can learn the
# operation rather than a handful of templates. Combinations that would rebuild a novel frame are avoided by
# construction (`tests/data/test_demo_corpus.py` checks the training streams never emit one).
_ARITH_PHRASES = {
    "add": {
        "zh": [
            "{a} 加 {b}",
            "{a} 加上 {b}",
            "{a} 与 {b} 的和",
            "{a} 增加 {b}",
            "{a} 和 {b} 合起来",
            "{a} 再添上 {b}",
        ],
        "en": [
            "{a} plus {b}",
            "the sum of {a} and {b}",
            "{b} added to {a}",
            "{b} more than {a}",
            "{a} increased by {b}",
            "{a} and {b} together",
        ],
    },
    "sub": {
        "zh": [
            "{a} 减 {b}",
            "{a} 减去 {b}",
            "{a} 与 {b} 的差",
            "{a} 减少 {b}",
            "{a} 去掉 {b}",
            "{a} 拿走 {b}",
            "{a} 扣除 {b}",
        ],
        "en": [
            "{a} minus {b}",
            "{a} take away {b}",
            "{b} less than {a}",
            "{a} decreased by {b}",
            "{b} subtracted from {a}",
            "{a} with {b} removed",
        ],
    },
    "mul": {
        "zh": ["{a} 乘 {b}", "{a} 乘以 {b}", "{a} 与 {b} 的积", "{b} 个 {a}", "{a} 的 {b} 倍", "{b} 组 {a}"],
        "en": [
            "{a} times {b}",
            "{a} multiplied by {b}",
            "the product of {a} and {b}",
            "{b} groups of {a}",
            "{b} lots of {a}",
            "{a} taken {b} times",
        ],
    },
}
_QUESTION_FRAMES = {
    "zh": ["{x}等于几？", "求{x}。", "请算出{x}。", "{x}得多少？", "算一算{x}。", "{x}是几？"],
    "en": [
        "What is {x}?",
        "Find {x}.",
        "Work out {x}.",
        "How much is {x}?",
        "Tell me {x}.",
        "Please compute {x}.",
    ],
}
_DIGIT_HAN = re.compile(r"(\d)([\u4e00-\u9fff])")
_HAN_DIGIT = re.compile(r"([\u4e00-\u9fff])(\d)")
COMPOSED_SHARE = 0.5  # training arithmetic questions asked in a composed frame (the rest: _ARITH_TEMPLATES)


def _arith_question(rng: random.Random, family: str, lang: str, a: int, b: int, templates: dict) -> str:
    if templates is _ARITH_TEMPLATES and rng.random() < COMPOSED_SHARE:
        phrase = rng.choice(_ARITH_PHRASES[family][lang]).format(a=a, b=b)
        question = rng.choice(_QUESTION_FRAMES[lang]).format(x=phrase)
        # the corpus's Chinese style: a space between a number and a character, none elsewhere
        return _DIGIT_HAN.sub(r"\1 \2", _HAN_DIGIT.sub(r"\1 \2", question)) if lang == "zh" else question
    return rng.choice(templates[family][lang]).format(a=a, b=b)


# Wordings that no training generator produces: `novel_problems` asks the held-out keys in these, to measure
# whether a model learned the operation or the training templates. Each frame differs from every training
# frame in more than the numbers (`tests/native/test_demo_corpus.py` checks the training streams never emit
# one).
_NOVEL_ARITH_TEMPLATES = {
    "add": {
        "zh": [
            "{a} 与 {b} 相加，结果是几？",
            "{a} 和 {b} 合在一起一共是多少？",
            "比 {a} 多 {b} 的数是多少？",
            "{a} 增加 {b} 以后是多少？",
        ],
        "en": [
            "If you put {a} and {b} together, how many is that?",
            "Increase {a} by {b}. What number do you get?",
            "What number is {b} more than {a}?",
            "Calculate the total of {a} and {b}.",
        ],
    },
    "sub": {
        "zh": [
            "从 {a} 里拿走 {b}，还剩几？",
            "比 {a} 少 {b} 的数是多少？",
            "{a} 减少 {b} 以后是多少？",
            "{a} 扣掉 {b} 等于几？",
        ],
        "en": [
            "Take {b} away from {a}. What remains?",
            "What number is {b} less than {a}?",
            "Decrease {a} by {b}. What is the result?",
            "If you remove {b} from {a}, how many are left?",
        ],
    },
    "mul": {
        "zh": [
            "{a} 与 {b} 相乘，积是几？",
            "把 {a} 扩大 {b} 倍是多少？",
            "{b} 组，每组 {a} 个，一共几个？",
            "{a} 乘以 {b}，结果是几？",
        ],
        "en": [
            "Find the product when {a} is multiplied by {b}.",
            "If each of {b} bags holds {a}, how many are there in all?",
            "There are {b} rows of {a} chairs. How many chairs are there?",
            "Calculate {a} times {b}.",
        ],
    },
}


def _add_steps(a: int, b: int, lang: str) -> list[str]:
    s = a + b
    hi, lo = (a, b) if a >= b else (b, a)
    if hi < 10:
        first = _zh_en(lang, f"从 {hi} 往后数 {lo} 个数，得到 {s}。", f"Count on {lo} from {hi} to get {s}.")
        return [first, _zh_en(lang, f"所以 {a} + {b} = {s}。", f"So {a} + {b} = {s}.")]
    if lo < 10:
        ones = hi % 10 + lo
        steps = [
            _zh_en(
                lang,
                f"先算个位：{hi % 10} + {lo} = {ones}，再加上整十：{hi - hi % 10} + {ones} = {s}。",
                f"First the ones: {hi % 10} + {lo} = {ones}. "
                f"Then add the tens: {hi - hi % 10} + {ones} = {s}.",
            )
        ]
    elif a % 10 == 0 or b % 10 == 0:
        tens, ones = a // 10 * 10 + b // 10 * 10, a % 10 + b % 10
        steps = [
            _zh_en(
                lang,
                f"先算整十：{a // 10 * 10} + {b // 10 * 10} = {tens}。",
                f"First the tens: {a // 10 * 10} + {b // 10 * 10} = {tens}.",
            )
        ]
        if ones:
            steps.append(
                _zh_en(
                    lang, f"再加上个位：{tens} + {ones} = {s}。", f"Then add the ones: {tens} + {ones} = {s}."
                )
            )
    else:
        tens, ones = a // 10 * 10 + b // 10 * 10, a % 10 + b % 10
        steps = [
            _zh_en(
                lang,
                f"把两个数拆成整十和个位：{a // 10 * 10} + {b // 10 * 10} = {tens}，{a % 10} + "
                f"{b % 10} = {ones}。",
                f"Split into tens and ones: {a // 10 * 10} + {b // 10 * 10} = {tens} and {a % 10} + "
                f"{b % 10} = {ones}.",
            ),
            _zh_en(lang, f"再算 {tens} + {ones} = {s}。", f"Then {tens} + {ones} = {s}."),
        ]
    return steps + [_zh_en(lang, f"所以 {a} + {b} = {s}。", f"So {a} + {b} = {s}.")]


def _sub_steps(a: int, b: int, lang: str) -> list[str]:
    d = a - b
    if b >= 10:
        mid = a - b // 10 * 10
        steps = [
            _zh_en(
                lang,
                f"先减整十：{a} - {b // 10 * 10} = {mid}。",
                f"First subtract the tens: {a} - {b // 10 * 10} = {mid}.",
            )
        ]
        if b % 10:
            steps.append(
                _zh_en(
                    lang,
                    f"再减个位：{mid} - {b % 10} = {d}。",
                    f"Then subtract the ones: {mid} - {b % 10} = {d}.",
                )
            )
    elif a >= 10 and 0 < b <= a % 10:
        x = a % 10 - b
        steps = [
            _zh_en(
                lang,
                f"个位 {a % 10} - {b} = {x}，整十不变：{a - a % 10} + {x} = {d}。",
                f"Ones: {a % 10} - {b} = {x}. The tens stay: {a - a % 10} + {x} = {d}.",
            )
        ]
    elif a >= 10 and a % 10:
        steps = [
            _zh_en(
                lang,
                f"先减去 {a % 10}：{a} - {a % 10} = {a - a % 10}，再减去 {b - a % 10}：{a - a % 10} - "
                f"{b - a % 10} = {d}。",
                f"First take away {a % 10}: {a} - {a % 10} = {a - a % 10}. Then take away {b - a % 10}: "
                f"{a - a % 10} - {b - a % 10} = {d}.",
            )
        ]
    else:
        steps = [_zh_en(lang, f"从 {a} 往回数 {b} 个数，得到 {d}。", f"Count back {b} from {a} to get {d}.")]
    return steps + [_zh_en(lang, f"所以 {a} - {b} = {d}。", f"So {a} - {b} = {d}.")]


def _mul_steps(a: int, b: int, lang: str) -> list[str]:
    p = a * b
    if b <= 5:
        chain = " + ".join([str(a)] * b)
        first = _zh_en(
            lang,
            f"{a} × {b} 就是 {b} 个 {a} 相加：{chain} = {p}。",
            f"{a} × {b} means adding {b} groups of {a}: {chain} = {p}.",
        )
    else:
        first = _zh_en(
            lang,
            f"先算 {a} × {b - 1} = {a * (b - 1)}，再加一个 {a}：{a * (b - 1)} + {a} = {p}。",
            f"First {a} × {b - 1} = {a * (b - 1)}, then add one more {a}: {a * (b - 1)} + {a} = {p}.",
        )
    return [first, _zh_en(lang, f"所以 {a} × {b} = {p}。", f"So {a} × {b} = {p}.")]


def _gen_arith(rng: random.Random, lang: str, family: str, templates: dict = _ARITH_TEMPLATES) -> Problem:
    """Addition, subtraction or multiplication of small integers, asked in one of ``templates``."""
    tier = rng.random()
    if family == "add":
        if tier < 0.25:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
        elif tier < 0.6:
            a, b = rng.randint(10, 99), rng.randint(1, 9)
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            a, b = b, a
        key, ans, steps = ("add", min(a, b), max(a, b)), a + b, _add_steps(a, b, lang)
    elif family == "sub":
        if tier < 0.3:
            a = rng.randint(2, 18)
            b = rng.randint(1, min(9, a - 1))
        elif tier < 0.6:
            a, b = rng.randint(10, 99), rng.randint(1, 9)
        else:
            a = rng.randint(20, 99)
            b = rng.randint(10, a - 1)
        key, ans, steps = ("sub", a, b), a - b, _sub_steps(a, b, lang)
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        key, ans, steps = ("mul", min(a, b), max(a, b)), a * b, _mul_steps(a, b, lang)
    op = {"add": "+", "sub": "-", "mul": "×"}[family]
    question = _arith_question(rng, family, lang, a, b, templates)
    return Problem(
        family, lang, question, str(ans), key, f"{a} {op} {b} = {ans}", steps, {"expr": [a, op, b]}
    )


# --------------------------------------------------------------------------------------- unit conversion
# key, zh big, zh small, en big (singular, plural), en small (plural), factor, value range of the big unit
_UNITS = [
    ("m-cm", "米", "厘米", "meter", "meters", "centimeters", 100, (2, 20)),
    ("kg-g", "千克", "克", "kilogram", "kilograms", "grams", 1000, (2, 10)),
    ("h-min", "小时", "分钟", "hour", "hours", "minutes", 60, (2, 10)),
    ("min-s", "分钟", "秒", "minute", "minutes", "seconds", 60, (2, 10)),
    ("yuan-jiao", "元", "角", "yuan", "yuan", "jiao", 10, (2, 50)),
]
_CONVERT_TEMPLATES = {
    ("zh", True): ["{v} {B}等于多少{S}？", "{v} {B}是多少{S}？", "把 {v} {B}换算成{S}。", "{v} {B} = ？{S}"],
    ("zh", False): ["{w} {S}等于多少{B}？", "{w} {S}是多少{B}？", "把 {w} {S}换算成{B}。", "{w} {S} = ？{B}"],
    ("en", True): [
        "How many {S} are there in {v} {B}?",
        "Convert {v} {B} to {S}.",
        "{v} {B} = ? {S}",
        "How many {S} is {v} {B}?",
    ],
    ("en", False): [
        "How many {B} is {w} {S}?",
        "Convert {w} {S} to {B}.",
        "{w} {S} = ? {B}",
        "{w} {S} is how many {B}?",
    ],
}


def _unit_fact(unit: tuple, lang: str) -> str:
    _, zb, zs, eb1, _, es, f, _ = unit
    return _zh_en(lang, f"1 {zb} = {f} {zs}", f"1 {eb1} = {f} {es}")


def _gen_convert(rng: random.Random, lang: str) -> Problem:
    """Convert a small quantity between a larger and a smaller unit, in either direction."""
    unit = rng.choice(_UNITS)
    name, zb, zs, _, ebn, es, f, (lo, hi) = unit
    v, to_small = rng.randint(lo, hi), rng.random() < 0.6
    big, small = (zb, zs) if lang == "zh" else (ebn, es)
    question = rng.choice(_CONVERT_TEMPLATES[lang, to_small]).format(v=v, w=v * f, B=big, S=small)
    if to_small:
        ans, eq = v * f, f"{v} × {f} = {v * f}"
        how = f"{v} {big} = {eq} {small}"
    else:
        ans, eq = v, f"{v * f} ÷ {f} = {v}"
        how = f"{v * f} {small} = {eq} {big}"
    step = _zh_en(
        lang, f"因为 {_unit_fact(unit, lang)}，所以 {how}。", f"Since {_unit_fact(unit, lang)}, {how}."
    )
    return Problem(
        "convert",
        lang,
        question,
        str(ans),
        ("convert", name, v),
        eq,
        [step],
        {"units": name, "value": v, "to_small": to_small},
    )


# ---------------------------------------------------------------------------------------- word problems
_NAMES = {
    "zh": [("小明", "他"), ("小红", "她"), ("小华", "他"), ("小丽", "她"), ("小刚", "他"), ("小芳", "她")],
    "en": [
        ("Tom", "he", "him"),
        ("Anna", "she", "her"),
        ("Sam", "he", "him"),
        ("Lily", "she", "her"),
        ("Ben", "he", "him"),
        ("Emma", "she", "her"),
    ],
}
_ITEMS = {
    "zh": [
        ("苹果", "个"),
        ("橘子", "个"),
        ("铅笔", "支"),
        ("书", "本"),
        ("糖果", "颗"),
        ("贴纸", "张"),
        ("气球", "个"),
    ],
    "en": [
        ("apple", "apples"),
        ("orange", "oranges"),
        ("pencil", "pencils"),
        ("book", "books"),
        ("candy", "candies"),
        ("sticker", "stickers"),
        ("balloon", "balloons"),
    ],
}


def _word_numbers(rng: random.Random, kind: str) -> tuple[list, tuple]:
    """Sample operands for a word-problem kind: returns (expression, numbers). Answers are always >= 2."""
    r = rng.randint
    if kind == "gain_lose":
        a, b = r(2, 20), r(2, 10)
        c = r(1, a + b - 2)
        return [a, "+", b, "-", c], (a, b, c)
    if kind == "lose_gain":
        a = r(3, 20)
        b, c = r(1, a - 1), r(1, 10)
        return [a, "-", b, "+", c], (a, b, c)
    if kind == "total":
        a, b = r(2, 30), r(2, 30)
        return [a, "+", b], (a, b)
    if kind == "price":
        p, k = r(2, 9), r(2, 9)
        return [k, "×", p], (p, k)
    if kind == "change":
        a = r(10, 50)
        b = r(1, a - 2)
        return [a, "-", b], (a, b)
    if kind == "boxes":
        p, k = r(2, 9), r(2, 5)
        c = r(1, k * p - 2)
        return [k, "×", p, "-", c], (p, k, c)
    return _word_numbers(rng, _STORY_SHAPES[kind])


# More story kinds with the numbers of an existing one: the same arithmetic told in other settings and verbs.
_STORY_SHAPES = {"train": "change", "garden": "total", "savings": "price", "pond": "lose_gain"}


# kind -> (zh question, en question, zh ending, en ending); fields: names, items, numbers a/b/c/p/k and ans
_WORD_TEMPLATES = {
    "gain_lose": (
        "{name}有 {a} {u}{item}，{he}又得到了 {b} {u}，后来送给朋友 {c} {u}。{name}现在有多少{u}{item}？",
        "{Name} has {a} {items}. {He} gets {b} more and then gives {c} to a friend. "
        "How many {items} does {Name} have now?",
        "{name}现在有 {ans} {u}{item}。",
        "{Name} now has {ans} {items}.",
    ),
    "lose_gain": (
        "{name}有 {a} {u}{item}，弄丢了 {b} {u}，后来妈妈又给了{he} {c} {u}。{name}现在有多少{u}{item}？",
        "{Name} has {a} {items} but loses {b}. Later Mom gives {him} {c} more. "
        "How many {items} does {Name} have now?",
        "{name}现在有 {ans} {u}{item}。",
        "{Name} now has {ans} {items}.",
    ),
    "total": (
        "篮子里有 {a} {u}{item}，桌子上还有 {b} {u}{item}。一共有多少{u}{item}？",
        "There are {a} {items} in the basket and {b} {items} on the table. "
        "How many {items} are there in total?",
        "一共有 {ans} {u}{item}。",
        "There are {ans} {items} in total.",
    ),
    "price": (
        "一{u}{item}卖 {p} 元，{name}买了 {k} {u}，一共要付多少元？",
        "One {item} costs {p} yuan. {Name} buys {k} {items}. How many yuan does {Name} pay in total?",
        "{name}一共要付 {ans} 元。",
        "{Name} pays {ans} yuan in total.",
    ),
    "change": (
        "{name}带了 {a} 元去商店，买{item}花了 {b} 元。{name}还剩多少元？",
        "{Name} takes {a} yuan to the shop and spends {b} yuan on {items}. "
        "How many yuan does {Name} have left?",
        "{name}还剩 {ans} 元。",
        "{Name} has {ans} yuan left.",
    ),
    "boxes": (
        "每盒有 {p} {u}{item}，{name}买了 {k} 盒，又送给同学 {c} {u}。{name}还剩多少{u}{item}？",
        "Each box holds {p} {items}. {Name} buys {k} boxes and gives {c} of them to classmates. How many "
        "{items} does {Name} have left?",
        "{name}还剩 {ans} {u}{item}。",
        "{Name} has {ans} {items} left.",
    ),
    "train": (
        "火车上有 {a} 位乘客，到站时下车了 {b} 位。火车上还剩多少位乘客？",
        "A train has {a} passengers. {b} of them get off at the station. "
        "How many passengers are left on the train?",
        "火车上还剩 {ans} 位乘客。",
        "There are {ans} passengers left on the train.",
    ),
    "garden": (
        "花园里有 {a} 朵花，{name}又种了 {b} 朵。花园里现在有多少朵花？",
        "There are {a} flowers in the garden. {Name} plants {b} more. "
        "How many flowers are in the garden now?",
        "花园里现在有 {ans} 朵花。",
        "There are {ans} flowers in the garden now.",
    ),
    "savings": (
        "{name}每天存 {p} 元，存了 {k} 天。{name}一共存了多少元？",
        "{Name} saves {p} yuan a day for {k} days. How many yuan does {Name} save in total?",
        "{name}一共存了 {ans} 元。",
        "{Name} saves {ans} yuan in total.",
    ),
    "pond": (
        "池塘里有 {a} 只鸭子，游走了 {b} 只，后来又游来 {c} 只。池塘里现在有几只鸭子？",
        "There are {a} ducks on the pond. {b} swim away and later {c} more come. "
        "How many ducks are on the pond now?",
        "池塘里现在有 {ans} 只鸭子。",
        "There are {ans} ducks on the pond now.",
    ),
}


def _eval_left_to_right(expr: list) -> list[tuple[int, str, int, int]]:
    """Evaluate ``[x, op, y, op, z]`` left to right; returns the steps (lhs, op, rhs, result)."""
    ops = {"+": int.__add__, "-": int.__sub__, "×": int.__mul__}
    acc, out = expr[0], []
    for op, y in zip(expr[1::2], expr[2::2], strict=True):
        out.append((acc, op, y, ops[op](acc, y)))
        acc = out[-1][3]
    return out


def _gen_word(rng: random.Random, lang: str) -> Problem:
    """A one- or two-step story problem with tiny numbers."""
    kind = rng.choice(list(_WORD_TEMPLATES))
    expr, nums = _word_numbers(rng, kind)
    calc = _eval_left_to_right(expr)
    ans = calc[-1][3]
    item_i = rng.randrange(len(_ITEMS["zh"]))
    letters = "pkc" if _STORY_SHAPES.get(kind, kind) in ("price", "boxes") else "abc"
    fields: dict = dict(zip(letters[: len(nums)], nums, strict=True))
    if lang == "zh":
        name, he = rng.choice(_NAMES["zh"])
        item, u = _ITEMS["zh"][item_i]
        fields.update(name=name, he=he, item=item, u=u, ans=ans)
    else:
        name, he, him = rng.choice(_NAMES["en"])
        item, items = _ITEMS["en"][item_i]
        fields.update(Name=name, He=he.capitalize(), him=him, item=item, items=items, ans=ans)
    zq, eq_, zend, eend = _WORD_TEMPLATES[kind]
    question, end = (zq, zend) if lang == "zh" else (eq_, eend)
    parts = [f"{x} {op} {y} = {r}" for x, op, y, r in calc]
    if len(parts) == 1:
        steps = [_zh_en(lang, f"列式计算：{parts[0]}。", f"Write the calculation: {parts[0]}.")]
    else:
        steps = [_zh_en(lang, f"先算 {parts[0]}，再算 {parts[1]}。", f"First, {parts[0]}. Then, {parts[1]}.")]
    equation = " ".join(str(t) for t in expr) + f" = {ans}"
    return Problem(
        "word",
        lang,
        question.format(**fields),
        str(ans),
        ("word", kind) + tuple(nums),
        equation,
        steps,
        {"expr": expr, "kind": kind},
        end.format(**fields),
    )


# Story frames no training generator uses (see `_NOVEL_ARITH_TEMPLATES`): kind ->
# (zh, en, expression, numbers).
_NOVEL_WORD_TEMPLATES = {
    "shelf": (
        "书架上有 {a} 本书，{name}又放上去 {b} 本。书架上现在有几本书？",
        "A shelf has {a} books. {Name} puts {b} more on it. How many books are on the shelf now?",
    ),
    "bus": (
        "公交车上有 {a} 个人，到站后下去了 {b} 个人。车上还有多少人？",
        "A bus has {a} people on it. At the stop, {b} people get off. How many people are still on the bus?",
    ),
    "pages": (
        "{name}每天读 {p} 页书，连续读了 {k} 天，一共读了多少页？",
        "{Name} reads {p} pages every day for {k} days. How many pages does {Name} read in all?",
    ),
    "birds": (
        "树上有 {a} 只鸟，飞走了 {b} 只，又飞来 {c} 只。树上现在有几只鸟？",
        "There are {a} birds in a tree. {b} fly away, then {c} more arrive. "
        "How many birds are in the tree now?",
    ),
}


def _gen_novel_word(rng: random.Random, lang: str) -> Problem:
    """A story problem in a frame no training generator uses; its key is the arithmetic it needs, so
    `is_heldout_key` keeps its operand pairs out of training as for plain arithmetic."""
    kind = rng.choice(list(_NOVEL_WORD_TEMPLATES))
    r = rng.randint
    if kind == "shelf":
        a, b = r(10, 60), r(2, 30)
        expr, fields, key = [a, "+", b], {"a": a, "b": b}, ("add", min(a, b), max(a, b))
    elif kind == "bus":
        a = r(12, 60)
        b = r(2, a - 2)
        expr, fields, key = [a, "-", b], {"a": a, "b": b}, ("sub", a, b)
    elif kind == "pages":
        p, k = r(2, 9), r(2, 9)
        expr, fields, key = [k, "×", p], {"p": p, "k": k}, ("mul", min(p, k), max(p, k))
    else:
        a = r(5, 20)
        b, c = r(1, a - 1), r(1, 10)
        expr, fields, key = [a, "-", b, "+", c], {"a": a, "b": b, "c": c}, ("word", "birds", a, b, c)
    if lang == "zh":
        fields["name"] = rng.choice(_NAMES["zh"])[0]
    else:
        fields["Name"] = rng.choice(_NAMES["en"])[0]
    calc = _eval_left_to_right(expr)
    ans = calc[-1][3]
    question = _NOVEL_WORD_TEMPLATES[kind][0 if lang == "zh" else 1].format(**fields)
    equation = " ".join(str(t) for t in expr) + f" = {ans}"
    steps = [f"{x} {op} {y} = {res}" for x, op, y, res in calc]
    return Problem("word", lang, question, str(ans), key, equation, steps, {"expr": expr, "kind": kind})


def _sample_problem(
    rng: random.Random, lang: str, heldout: bool = False, only: tuple[str, ...] = tuple(_FAMILY_WEIGHTS)
) -> Problem:
    """Draw a math problem (from the families in ``only``) whose key is reserved (``heldout=True``) or
    unreserved (training)."""
    families, weights = zip(*((f, w) for f, w in _FAMILY_WEIGHTS.items() if f in only), strict=True)
    family = rng.choices(families, weights)[0]  # drawn once, so both splits follow _FAMILY_WEIGHTS
    for _ in range(10_000):
        if family == "convert":
            p = _gen_convert(rng, lang)
        elif family == "word":
            p = _gen_word(rng, lang)
        else:
            p = _gen_arith(rng, lang, family)
        if is_heldout_key(p.key) == heldout:
            return p
    raise RuntimeError("could not sample a problem in the requested split")


# ------------------------------------------------------------------------------------- facts and chit-chat
_DAYS = {
    "zh": ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"],
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
}
_COLOURS = {
    "zh": [
        ("天空", "蓝色"),
        ("草", "绿色"),
        ("雪", "白色"),
        ("香蕉", "黄色"),
        ("煤", "黑色"),
        ("草莓", "红色"),
        ("橙子", "橙色"),
    ],
    "en": [
        ("the sky", "blue"),
        ("grass", "green"),
        ("snow", "white"),
        ("a banana", "yellow"),
        ("coal", "black"),
        ("a strawberry", "red"),
        ("an orange", "orange"),
    ],
}
_OPPOSITES = {
    "zh": [
        ("大", "小"),
        ("高", "矮"),
        ("快", "慢"),
        ("多", "少"),
        ("长", "短"),
        ("冷", "热"),
        ("上", "下"),
        ("左", "右"),
        ("开", "关"),
        ("黑", "白"),
        ("早", "晚"),
        ("新", "旧"),
    ],
    "en": [
        ("big", "small"),
        ("tall", "short"),
        ("fast", "slow"),
        ("many", "few"),
        ("long", "short"),
        ("cold", "hot"),
        ("up", "down"),
        ("left", "right"),
        ("open", "closed"),
        ("black", "white"),
        ("early", "late"),
        ("new", "old"),
    ],
}
_CHAT = {  # (user variants, assistant variants)
    "zh": [
        (
            ["你好！", "您好！", "嗨，你好呀！", "早上好！", "晚上好！"],
            [
                "你好！有什么可以帮你的吗？",
                "你好！我是 MiniMind，很高兴见到你。",
                "你好呀！想让我算点什么吗？",
            ],
        ),
        (
            ["你是谁？", "请介绍一下你自己。", "你叫什么名字？"],
            [
                "我是 MiniMind，一个从零开始训练的小型语言模型，会做简单的算术和单位换算。",
                "我叫 MiniMind，是一个很小的语言模型，可以回答一些简单的问题。",
            ],
        ),
        (
            ["你会做什么？", "你能帮我做什么？"],
            ["我会做简单的加减乘除和单位换算，也知道一些常识，比如星期、颜色和反义词。"],
        ),
        (
            ["谢谢！", "谢谢你的帮助。", "太好了，谢谢！"],
            ["不客气！", "不用谢，很高兴能帮到你。", "不客气，还有问题可以随时问我。"],
        ),
    ],
    "en": [
        (
            ["Hello!", "Hi there!", "Hey, how are you?", "Good morning!", "Good evening!"],
            [
                "Hello! How can I help you?",
                "Hi! I am MiniMind. Nice to meet you.",
                "Hello! Do you want me to calculate something?",
            ],
        ),
        (
            ["Who are you?", "Please introduce yourself.", "What is your name?"],
            [
                "I am MiniMind, a small language model trained from scratch. "
                "I can do simple arithmetic and unit conversions.",
                "My name is MiniMind. I am a tiny language model that can answer simple questions.",
            ],
        ),
        (
            ["What can you do?", "How can you help me?"],
            [
                "I can add, subtract and multiply small numbers, convert units, and answer simple questions "
                "about days, colours and opposites."
            ],
        ),
        (
            ["Thank you!", "Thanks for your help.", "Great, thanks!"],
            [
                "You're welcome!",
                "No problem, happy to help.",
                "You're welcome. Feel free to ask me anything else.",
            ],
        ),
    ],
}


def _fact_qa(rng: random.Random, lang: str) -> tuple[str, str]:
    """A (question, answer) pair about days, colours, opposites, counting, parity or units."""
    kind = rng.randrange(7)
    if kind == 0:
        i, days = rng.randrange(7), _DAYS[lang]
        if lang == "zh":
            return f"{days[i]}的后一天是星期几？", f"{days[i]}的后一天是{days[(i + 1) % 7]}。"
        return f"What day comes after {days[i]}?", f"The day after {days[i]} is {days[(i + 1) % 7]}."
    if kind == 1:
        i, days = rng.randrange(7), _DAYS[lang]
        if lang == "zh":
            return f"{days[i]}的前一天是星期几？", f"{days[i]}的前一天是{days[i - 1]}。"
        return f"What day comes before {days[i]}?", f"The day before {days[i]} is {days[i - 1]}."
    if kind == 2:
        obj, col = rng.choice(_COLOURS[lang])
        if lang == "zh":
            return f"{obj}是什么颜色的？", f"{obj}是{col}的。"
        return f"What colour is {obj}?", f"{obj[0].upper() + obj[1:]} is {col}."
    if kind == 3:
        a, b = rng.choice(_OPPOSITES[lang])
        if lang == "zh":
            return f"“{a}”的反义词是什么？", f"“{a}”的反义词是“{b}”。"
        return f'What is the opposite of "{a}"?', f'The opposite of "{a}" is "{b}".'
    if kind == 4:
        a = rng.randint(1, 15)
        b = a + rng.randint(3, 8)
        seq = _zh_en(lang, "，", ", ").join(str(x) for x in range(a, b + 1))
        return (
            _zh_en(lang, f"请从 {a} 数到 {b}。", f"Please count from {a} to {b}."),
            _zh_en(lang, f"从 {a} 数到 {b}：{seq}。", f"Counting from {a} to {b}: {seq}."),
        )
    if kind == 5:
        n = rng.randint(1, 99)
        even = n % 2 == 0
        if lang == "zh":
            return f"{n} 是奇数还是偶数？", f"{n} 是{'偶数' if even else '奇数'}。"
        return f"Is {n} odd or even?", f"{n} is an {'even' if even else 'odd'} number."
    unit = rng.choice(_UNITS)
    if lang == "zh":
        return f"1 {unit[1]}等于多少{unit[2]}？", f"1 {unit[1]}等于 {unit[6]} {unit[2]}。"
    return f"How many {unit[5]} are in 1 {unit[3]}?", f"There are {unit[6]} {unit[5]} in 1 {unit[3]}."


def _chat_qa(rng: random.Random, lang: str) -> tuple[str, str]:
    users, replies = rng.choice(_CHAT[lang])
    return rng.choice(users), rng.choice(replies)


# --------------------------------------------------------------------------------------------- assembling
_SYSTEM = {
    "zh": [
        "你是 MiniMind，一个乐于助人的小助手。",
        "你是一个擅长算术的小助手。请一步一步思考，最后写出“答案是 数字。”",
    ],
    "en": [
        "You are MiniMind, a helpful little assistant.",
        'You are a math tutor. Think step by step and end with "The answer is NUMBER."',
    ],
}
_FOLLOW_UP = {
    "zh": ["再算一题：", "那这个呢？", "下一题：", ""],
    "en": ["One more: ", "And this one? ", "Next: ", ""],
}


def _math_reply(rng: random.Random, p: Problem) -> dict:
    """Assistant turn for a math problem: reasoning_content + answer, inline steps + answer, or short."""
    style = rng.random()
    sep = "" if p.lang == "zh" else " "
    if style < 0.35:
        return {"role": "assistant", "content": p.answer_line(), "reasoning_content": p.explanation()}
    if style < 0.75:
        return {"role": "assistant", "content": p.explanation() + sep + p.answer_line()}
    return {"role": "assistant", "content": p.short() + sep + p.answer_line()}


def _sft_turns(rng: random.Random, lang: str) -> list[dict]:
    """1-3 user/assistant exchanges in one language, math-heavy."""
    turns: list[dict] = []
    for i in range(1 if rng.random() < 0.75 else rng.randint(2, 3)):
        kind = rng.random()
        if kind < 0.6:
            p = _sample_problem(rng, lang)
            prefix = rng.choice(_FOLLOW_UP[lang]) if i else ""
            turns += [{"role": "user", "content": prefix + p.question}, _math_reply(rng, p)]
        else:
            q, a = _fact_qa(rng, lang) if kind < 0.85 else _chat_qa(rng, lang)
            turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return turns


def _lang(rng: random.Random) -> str:
    return "zh" if rng.random() < ZH_RATIO else "en"


def _seg_worked(rng: random.Random, lang: str) -> str:
    p = _sample_problem(rng, lang)
    expl, sep = p.explanation(), ("" if lang == "zh" else " ")
    if p.family == "word" and rng.random() < 0.6:
        return f"{p.question}\n{expl}{sep}{p.story_end}"
    fmt = rng.randrange(4)
    if fmt == 0:
        return _zh_en(
            lang,
            f"例题：{p.question}\n解：{expl}{p.answer_line()}",
            f"Example: {p.question}\nSolution: {expl} {p.answer_line()}",
        )
    if fmt == 1:
        return _zh_en(
            lang,
            f"问：{p.question}\n答：{expl}{p.answer_line()}",
            f"Q: {p.question}\nA: {expl} {p.answer_line()}",
        )
    if fmt == 2:
        return f"{p.short()}{sep}{expl}"
    return _zh_en(
        lang,
        f"{p.question}\n{expl}因此{p.answer_line()}",
        f"{p.question}\n{expl} Therefore, the answer is {p.answer}.",
    )


def _seg_table(rng: random.Random, lang: str) -> str:
    rows = []
    for _ in range(rng.randint(3, 7)):
        p = _sample_problem(rng, lang, only=("add", "sub", "mul"))
        rows.append(f"| {p.equation.rsplit(' = ', 1)[0]} | {p.answer} |")
    head = _zh_en(lang, "口算练习：\n| 算式 | 结果 |", "Practice sheet:\n| Problem | Result |")
    return "\n".join([head, "| --- | --- |"] + rows)


def _seg_facts(rng: random.Random, lang: str) -> str:
    out = []
    for _ in range(rng.randint(2, 5)):
        kind = rng.randrange(6)
        if kind == 0:
            days = _DAYS[lang]
            out.append(
                _zh_en(
                    lang,
                    f"一个星期有七天：{'、'.join(days)}。",
                    f"A week has seven days: {', '.join(days[:-1])} and {days[-1]}.",
                )
            )
        elif kind == 1:
            out.append(_fact_qa(rng, lang)[1])  # answers are complete declarative sentences
        elif kind == 2:
            a = rng.randint(1, 20)
            b = a + rng.randint(4, 9)
            seq = _zh_en(lang, "，", ", ").join(str(x) for x in range(a, b + 1))
            out.append(_zh_en(lang, f"从 {a} 数到 {b}：{seq}。", f"Counting from {a} to {b}: {seq}."))
        elif kind == 3:
            n = rng.randint(2, 98)
            out.append(
                _zh_en(
                    lang,
                    f"{n} 的前一个数是 {n - 1}，后一个数是 {n + 1}。",
                    f"The number before {n} is {n - 1} and the number after {n} is {n + 1}.",
                )
            )
        elif kind == 4:
            out.append(_unit_fact(rng.choice(_UNITS), lang) + _zh_en(lang, "。", "."))
        else:
            out.append(
                _zh_en(
                    lang,
                    "MiniMind 是一个从零开始训练的小型语言模型，它会做简单的算术。",
                    "MiniMind is a small language model trained from scratch. It can do simple arithmetic.",
                )
            )
    return ("" if lang == "zh" else " ").join(dict.fromkeys(out))  # drop repeated sentences


def _seg_dialogue(rng: random.Random, lang: str) -> str:
    user, bot = _zh_en(lang, "用户：", "User: "), _zh_en(lang, "助手：", "Assistant: ")
    lines = []
    for t in _sft_turns(rng, lang):
        text = t["content"]
        if "reasoning_content" in t:
            text = t["reasoning_content"] + ("" if lang == "zh" else " ") + text
        lines.append((user if t["role"] == "user" else bot) + text)
    return "\n".join(lines)


_SEGMENTS: list[tuple[Callable[[random.Random, str], str], float]] = [
    (_seg_worked, 0.35),
    (_seg_table, 0.1),
    (_seg_facts, 0.3),
    (_seg_dialogue, 0.25),
]


def _unique(make: Callable[[], object], n: int, key: Callable[[object], str] = json.dumps) -> list:
    """Call ``make`` until ``n`` distinct rows exist (gives up de-duplicating after ``50 * n`` draws)."""
    out, seen = [], set()
    for _ in range(50 * n):
        if len(out) >= n:
            break
        row = make()
        k = key(row)
        if k not in seen:
            seen.add(k)
            out.append(row)
    while len(out) < n:  # the template space is exhausted: accept duplicates
        out.append(make())
    return out


def pretrain_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct pretraining documents (~40-500 chars, median ~240): worked examples, practice tables,
    word-problem stories, fact paragraphs and rendered dialogues; one language per document."""
    rng = random.Random(f"pretrain:{seed}")
    funcs, weights = zip(*_SEGMENTS, strict=True)

    def make() -> str:
        lang, target = _lang(rng), rng.randint(40, 320)
        parts = [rng.choices(funcs, weights)[0](rng, lang)]
        while sum(map(len, parts)) < target:
            seg = rng.choices(funcs, weights)[0](rng, lang)
            if sum(map(len, parts)) + len(seg) > 400:
                break
            parts.append(seg)
        return "\n\n".join(parts)

    return _unique(make, n, key=lambda s: s)


def sft_conversations(n: int, seed: int = 1) -> list[dict]:
    """``n`` distinct MiniMind-format SFT rows ``{"conversations": [...]}``: optional system prompt, then
    alternating user/assistant turns ending with the assistant. Math answers end with ``答案是 N。`` or
    ``The answer is N.``; about a third of math turns carry the steps in ``reasoning_content``."""
    rng = random.Random(f"sft:{seed}")

    def make() -> dict:
        lang = _lang(rng)
        system = [{"role": "system", "content": rng.choice(_SYSTEM[lang])}] if rng.random() < 0.25 else []
        return {"conversations": system + _sft_turns(rng, lang)}

    return _unique(make, n, key=lambda r: json.dumps(r, ensure_ascii=False))


def calculator_schema() -> list[dict]:
    """The calculator's schema as SFT rows carry it (the one `minimind_hf.tools` gives the rollouts)."""
    from ..tools import get_tools, tool_schemas

    return tool_schemas(get_tools(["calculator"]))


def tool_conversations(n: int, seed: int = 5, direct_share: float = 0.0) -> list[dict]:
    """``n`` SFT rows in which the assistant answers an arithmetic or word problem (training keys) by calling
    the calculator: user question -> assistant ``calculator(expression)`` -> tool result -> assistant
    ``equation + answer line``. Rows carry the calculator's schema in ``tools``. In a `direct_share` of the
    rows the calculator is offered but the assistant answers by itself (worked steps or the equation, as in
    `sft_conversations`): demonstrations of both habits, so RL can learn from the reward when calling pays."""
    schema = calculator_schema()
    rng = random.Random(f"tools:{seed}")
    rows = []
    for p in math_problems(n, seed, stream="tools", families=("add", "sub", "mul", "word")):
        if rng.random() < direct_share:
            user = {"role": "user", "content": p.question}
            rows.append({"conversations": [user, _math_reply(rng, p)], "tools": schema})
            continue
        expression = " ".join(str(x) for x in p.meta["expr"])
        call = {
            "type": "function",
            "function": {"name": "calculator", "arguments": {"expression": expression}},
        }
        sep = "" if p.lang == "zh" else " "
        final = rng.choice([p.answer_line(), p.short() + sep + p.answer_line()])
        rows.append(
            {
                "conversations": [
                    {"role": "user", "content": p.question},
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "content": p.answer},
                    {"role": "assistant", "content": final},
                ],
                "tools": schema,
            }
        )
    return rows


def math_problems(
    n: int,
    seed: int = 0,
    *,
    heldout: bool = False,
    stream: str = "math",
    families: tuple[str, ...] = tuple(_FAMILY_WEIGHTS),
) -> list[Problem]:
    """``n`` math problems with distinct questions, from the training (default) or held-out key space.
    ``stream`` separates the random streams of different consumers (``"rl"``, ``"heldout"``, ...)."""
    rng = random.Random(f"{stream}:{seed}")
    return _unique(lambda: _sample_problem(rng, _lang(rng), heldout, families), n, key=lambda p: p.question)


def rl_prompts(n: int, seed: int = 2) -> list[dict]:
    """``n`` RL prompts ``{"conversations": [{"role": "user", "content": q}], "gt": "68"}``
    (training keys)."""
    return [
        {"conversations": [{"role": "user", "content": p.question}], "gt": p.answer}
        for p in math_problems(n, seed, stream="rl")
    ]


def _wrong_answer(rng: random.Random, answer: str) -> str:
    """A plausible wrong number near ``answer`` (off by a small amount, never equal, never negative)."""
    value = int(float(answer))
    offsets = [d for d in (-10, -2, -1, 1, 2, 10) if value + d >= 0]
    return str(value + rng.choice(offsets))


def dpo_pairs(n: int, seed: int = 3) -> list[dict]:
    """``n`` preference pairs ``{"chosen": [user, assistant], "rejected": [user, assistant]}`` on training-key
    math problems: both answers show the equation, the chosen one ends in the right number, the rejected one
    in a wrong one (a small offset), so a DPO-trained model should prefer correct arithmetic."""
    rng = random.Random(f"dpo:{seed}")
    rows = []
    for p in math_problems(n, seed, stream="dpo"):
        user = {"role": "user", "content": p.question}
        sep = "" if p.lang == "zh" else " "
        wrong = Problem(**{**p.__dict__, "answer": _wrong_answer(rng, p.answer)})
        good = p.short() + sep + p.answer_line()
        bad = wrong.equation.rsplit("=", 1)[0] + "= " + wrong.answer + ("。" if p.lang == "zh" else ".")
        rows.append(
            {
                "chosen": [user, {"role": "assistant", "content": good}],
                "rejected": [user, {"role": "assistant", "content": bad + sep + wrong.answer_line()}],
            }
        )
    return rows


def heldout_problems(n: int, seed: int = 1234) -> list[dict]:
    """``n`` evaluation problems ``{"question", "answer", "lang", "family"}`` drawn only from reserved keys
    (see :func:`is_heldout_key`), hence disjoint from everything the training generators can produce."""
    return [
        {"question": p.question, "answer": p.answer, "lang": p.lang, "family": p.family}
        for p in math_problems(n, seed, heldout=True, stream="heldout")
    ]


def novel_problems(n: int, seed: int = 4321) -> list[dict]:
    """``n`` evaluation problems like `heldout_problems` (reserved keys only) but asked in wordings and story
    frames that no training generator produces (`_NOVEL_ARITH_TEMPLATES`, `_NOVEL_WORD_TEMPLATES`): a model
    that learned the templates rather than the operations fails these. Families: add, sub, mul (equal weights)
    and word problems; rows carry ``expr`` (the expression a calculator call needs)."""
    rng = random.Random(f"novel:{seed}")

    def make() -> Problem:
        lang = _lang(rng)
        for _ in range(10_000):
            family = rng.choice(("add", "sub", "mul", "word"))
            if family == "word":
                p = _gen_novel_word(rng, lang)
            else:
                p = _gen_arith(rng, lang, family, _NOVEL_ARITH_TEMPLATES)
            if is_heldout_key(p.key):
                return p
        raise RuntimeError("could not sample a novel problem with a reserved key")

    return [
        {
            "question": p.question,
            "answer": p.answer,
            "lang": p.lang,
            "family": p.family,
            "expr": " ".join(map(str, p.meta["expr"])),
        }
        for p in _unique(make, n, key=lambda p: p.question)
    ]


def write_demo_corpus(
    out_dir: str | Path,
    sizes: dict[str, int] | None = None,
    parts: tuple[str, ...] | None = None,
    tool_direct_share: float = 0.0,
) -> dict[str, Path]:
    """Write ``pretrain.jsonl`` (``{"text"}``), ``sft.jsonl``, ``rl.jsonl``, ``dpo.jsonl`` and
    ``heldout.jsonl`` to ``out_dir`` (only the parts named in ``parts``; default all).

    ``sizes`` overrides entries of :data:`DEFAULT_SIZES` (pretrain 12,000 docs ~2.8M chars; sft 6,000
    conversations ~0.74M chars; rl 2,000 prompts; dpo 1,000 pairs; heldout 200 problems). Takes ~2 s at
    default sizes. ``tool_direct_share``: see `tool_conversations`. Returns
    ``{"pretrain": path, "sft": path, ...}`` for the parts written.
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[int], list]] = {
        "pretrain": lambda k: [{"text": t} for t in pretrain_texts(k)],
        "sft": sft_conversations,
        "tools": lambda k: tool_conversations(k, direct_share=tool_direct_share),
        "rl": rl_prompts,
        "dpo": dpo_pairs,
        "heldout": heldout_problems,
    }
    unknown = set(parts or ()) - set(makers)
    if unknown:
        raise ValueError(f"unknown demo corpus part(s) {sorted(unknown)}; valid: {', '.join(makers)}")
    paths = {}
    for name in parts or makers:
        data = makers[name](sizes[name])
        paths[name] = out / f"{name}.jsonl"
        with paths[name].open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in data)
    return paths
