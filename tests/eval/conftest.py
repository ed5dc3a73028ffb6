"""Fixtures for the eval tests: the real C-Eval/CMMLU CSVs beside the repository (``../shared/data``,
override with MINIMIND_SHARED_DATA), a small tokenizer trained on real text and a tiny random model folder,
each built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import minimind_hf  # noqa: F401  (registers the model type)
from minimind_hf import MiniMindConfig, MiniMindForCausalLM
from minimind_hf.tokenizer import train_tokenizer

VOCAB_SIZE = 512


@pytest.fixture(scope="session")
def shared_data(shared_data: Path) -> Path:
    """The root fixture's folder, which must hold ceval/ and cmmlu/ (the official CSVs) and pretrain/."""
    if not (shared_data / "ceval").is_dir() or not (shared_data / "cmmlu").is_dir():
        pytest.skip(f"no ceval/ and cmmlu/ in {shared_data}")
    return shared_data


@pytest.fixture(autouse=True)
def _no_eval_data_env(monkeypatch):
    """Tests choose the data location explicitly; a developer's MINIMIND_EVAL_DATA must not leak in."""
    monkeypatch.delenv("MINIMIND_EVAL_DATA", raising=False)


@pytest.fixture(scope="session")
def tokenizer(shared_data):
    """A 512-token MiniMind tokenizer trained on real Chinese/English text and some exam questions."""
    texts = []
    with (shared_data / "pretrain" / "pretrain_mix.jsonl").open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i % 40 == 0:
                texts.append(json.loads(line)["text"])
    for csv in sorted((shared_data / "ceval" / "dev").glob("*.csv"))[:10]:
        texts.append(csv.read_text(encoding="utf-8"))
    return train_tokenizer(texts, vocab_size=VOCAB_SIZE, show_progress=False)


def _tiny_model(vocab_size: int, seed: int = 0) -> MiniMindForCausalLM:
    torch.manual_seed(seed)
    config = MiniMindConfig.from_preset("tiny", vocab_size=vocab_size)  # hidden 64, 2 layers
    return MiniMindForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model(tokenizer) -> MiniMindForCausalLM:
    """A randomly initialised 2-layer, 64-wide MiniMind over the session tokenizer."""
    return _tiny_model(len(tokenizer))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_model, tokenizer) -> Path:
    """The tiny model saved as a Hugging Face folder (loads with trust_remote_code=True)."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def uniform_model(tokenizer) -> MiniMindForCausalLM:
    """A model whose logits are all zero, i.e. it predicts every token with probability 1/V."""
    model = _tiny_model(len(tokenizer))
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.model.embed_tokens.weight.zero_()
    return model
