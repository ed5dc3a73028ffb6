"""Shared fixtures for the tokenizer tests: a small deterministic corpus and a tokenizer trained on it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from minimind_hf.tokenizer import train_tokenizer

HERE = Path(__file__).parent
ORIGINAL_TEMPLATE = HERE / "original_minimind_template.jinja"

_ZH = [
    "人工智能是计算机科学的一个分支，它试图理解智能的本质。",
    "今天天气很好，我们一起去公园散步吧。",
    "机器学习模型需要大量的数据来进行训练。",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "小明喜欢读书，每天晚上都会看一个小时的小说。",
    "语言模型可以生成文本、回答问题、翻译句子。",
    "请问这道数学题应该怎么解？先求导数，再找极值。",
]
_EN = [
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning models learn patterns from data.",
    "Tokenizers split text into smaller units called tokens.",
    "Hello world! This is a small test corpus for MiniMind.",
    "Large language models are trained on billions of tokens.",
    "She said: it's a beautiful day, isn't it?",
]
_CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "import json\ndata = json.loads('{\"key\": [1, 2, 3]}')\n",
    "if (x > 0 && y < 0) { return -1; }",
]
_EMOJI = ["😀", "🚀", "👍", "❤️", "🎉", "🌏"]


def make_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic mixed Chinese / English / code / emoji lines."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        parts = [rng.choice(_ZH), rng.choice(_EN)]
        if i % 3 == 0:
            parts.append(rng.choice(_CODE))
        if i % 5 == 0:
            parts.append(rng.choice(_EMOJI) + f" 第{i}行 line {i}")
        rng.shuffle(parts)
        lines.append(" ".join(parts))
    return lines


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="session")
def tok(corpus):
    return train_tokenizer(corpus, vocab_size=600, show_progress=False)


@pytest.fixture(scope="session")
def original_template() -> str:
    return ORIGINAL_TEMPLATE.read_text(encoding="utf-8")
