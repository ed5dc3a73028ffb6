"""Fixtures shared by every test folder, each built once per session, and the one thread guard.

- ``shared_data``: the real data handed to the project (``../shared/data``; MINIMIND_SHARED_DATA overrides).
- ``demo_files``: the built-in generated corpus at a few hundred rows, as jsonl files.
- ``tiny_tokenizer`` / ``tiny_tokenizer_dir``: a 512-token MiniMind tokenizer (chat template included) trained
  on the built-in pretrain text and SFT conversations.
- ``tiny_model_dir``: a freshly initialised ``tiny`` MiniMind (hidden 64, 2 layers, seed 0) over that
  tokenizer, saved with it: what a pretrain run would hand to SFT, in a second instead of a minute.
- ``make_tiny_model``: a new ``tiny`` MiniMind over that tokenizer, from a seed (and config overrides).

Folders whose tests need something else build it in their own conftest, and say why there (convert: a
tokenizer that has seen emoji and code, for llama.cpp; eval: real exam text; serve: a model overfit on fixed
replies).
"""

from pathlib import Path

import pytest
import torch
from _shared import shared_data_dir


def pytest_configure(config):
    """The one thread guard, part 1: the whole session (session fixtures included) runs with one intra-op
    thread. For tiny models on a shared 2-core machine one thread was measured 30-100x faster than two
    fighting other processes for the cores."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Part 2: a test that sets its own thread count (or runs code that does) gives the next test one
    again."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set MINIMIND_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> dict[str, Path]:
    """kind -> jsonl file of the built-in corpus: pretrain (300 docs), sft (240), rl (10), heldout (10)."""
    from minimind_hf.data.demo_corpus import write_demo_corpus

    sizes = {"pretrain": 300, "sft": 240, "rl": 10, "heldout": 10}
    return write_demo_corpus(tmp_path_factory.mktemp("demo_corpus"), sizes)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from minimind_hf.data.demo_corpus import pretrain_texts, sft_conversations
    from minimind_hf.tokenizer import train_tokenizer

    texts = pretrain_texts(600) + [m["content"] for r in sft_conversations(300) for m in r["conversations"]]
    out = tmp_path_factory.mktemp("tiny_tokenizer")
    train_tokenizer(texts, vocab_size=512, show_progress=False).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    """Shared by the whole session: tests must not change it (copy it first)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def make_tiny_model(tiny_tokenizer):
    """``make_tiny_model(seed=0, **config_overrides)`` -> a new ``tiny`` MiniMindForCausalLM over
    ``tiny_tokenizer`` (a new model per call: tests train and change them)."""
    from minimind_hf import MiniMindConfig, MiniMindForCausalLM

    def make(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        config = MiniMindConfig.from_preset("tiny", vocab_size=len(tiny_tokenizer), **overrides)
        return MiniMindForCausalLM(config)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_tiny_model, tiny_tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_model")
    make_tiny_model(seed=0).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out
