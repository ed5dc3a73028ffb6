"""Fixtures for the converter tests: one tokenizer and three briefly trained tiny models, built once.

Quantised files are only ever compared on *trained* weights: random weights give flat logits whose argmax
flips under any rounding (see shared/reference/gguf.md). The models are 2 layers, hidden 64, trained with a
plain AdamW loop for a few seconds on the built-in generated corpus.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from convert_helpers import train_tiny

from minimind_hf import MiniMindConfig
from minimind_hf.data.demo_corpus import pretrain_texts
from minimind_hf.tokenizer import train_tokenizer

VOCAB = 1024
SEQ_LEN = 128

# Text the tokenizer must handle like llama.cpp: Chinese, English, emoji, code, reserved tokens.
EXTRA_TEXTS = [
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5",
    "for (int i = 0; i < n; ++i) { sum += x[i]; }",
    "Emoji test 😀🚀👍 🎉 ❤️ and 中文表情😂",
    "Hello, world! It's a test... isn't it?  Multiple   spaces\tand tabs\n\nnew lines.",
    "人工智能是计算机科学的一个分支。北京是中国的首都。",
]

MODEL_KINDS = {
    # kind: config overrides on top of the tiny preset
    "dense": {},  # Qwen3 shape -> GGUF arch qwen3
    "moe": {
        "use_moe": True,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 96,
    },  # qwen3moe
    "noqk": {"use_qk_norm": False, "rms_norm_eps": 1e-5},  # minimind2 shape -> Llama / GGUF arch llama
}


@pytest.fixture(scope="session")
def tokenizer():
    texts = pretrain_texts(1500, seed=0) + EXTRA_TEXTS * 20
    return train_tokenizer(texts, vocab_size=VOCAB, show_progress=False)


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path


def _packed_batches(tokenizer, n_docs: int = 600, seed: int = 0) -> torch.Tensor:
    texts = pretrain_texts(n_docs, seed=seed) + EXTRA_TEXTS
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    n_rows = len(stream) // SEQ_LEN
    return torch.tensor(stream[: n_rows * SEQ_LEN]).view(n_rows, SEQ_LEN)


@pytest.fixture(scope="session")
def trained(tokenizer, tmp_path_factory) -> dict[str, Path]:
    """kind -> folder of a briefly trained tiny MiniMind (weights fp32, tokenizer and template saved)."""
    rows = _packed_batches(tokenizer)
    root = tmp_path_factory.mktemp("trained")
    folders = {}
    for kind, overrides in MODEL_KINDS.items():
        t0 = time.time()
        cfg = MiniMindConfig.from_preset("tiny", vocab_size=len(tokenizer), **overrides)
        model, loss = train_tiny(cfg, rows)
        assert loss < 3.5, f"{kind}: the tiny model did not learn (loss {loss:.2f})"
        folder = root / kind
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        print(f"trained {kind}: loss {loss:.3f} in {time.time() - t0:.1f}s")
        folders[kind] = folder
    return folders


@pytest.fixture(scope="session")
def eval_text() -> str:
    """A held-out long text (a different seed from training)."""
    return "\n".join(pretrain_texts(12, seed=12345))
