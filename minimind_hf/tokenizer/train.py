"""Train a MiniMind byte-level BPE tokenizer and wrap it as a transformers tokenizer.

The recipe follows the original MiniMind: byte-level BPE with GPT-2's pre-tokenizer regex
(``add_prefix_space=False``, no normalizer), 6400 tokens by default, and 36 reserved tokens at ids
0..35 (see :mod:`.special_tokens`). The result is a ``PreTrainedTokenizerFast`` with the chat
template attached, ready for ``save_pretrained``.

``split_digits=True`` swaps GPT-2's regex for Qwen2's, which isolates every digit (`` 68`` becomes the
pieces `` ``, ``6``, ``8`` instead of one opaque number token): arithmetic then works on digits the model
can combine, which is what lets a tiny model generalise to numbers it has not seen together. The regex is
exactly Qwen2's, so a GGUF export declares llama.cpp's ``qwen2`` pre-tokenizer.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .corpus import iter_source_texts, looks_like_files
from .special_tokens import (
    BOS_TOKEN,
    EOS_TOKEN,
    FIRST_NON_SPECIAL_ID,
    NUM_RESERVED,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    added_token,
    reserved_added_tokens,
)
from .template import RESPONSE_TEMPLATE, chat_template

logger = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 6400
MODEL_MAX_LENGTH = 32768
# Reserved tokens plus the 256 byte symbols of the initial alphabet.
MIN_VOCAB_SIZE = NUM_RESERVED + 256


# Qwen2's split regex (its tokenizer.json): one digit per piece (\p{N}), otherwise GPT-2-like.
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _build_backend(split_digits: bool = False) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if split_digits:  # exactly Qwen2's pre-tokenizer, so a GGUF export can declare llama.cpp's `qwen2`
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
            ]
        )
    else:  # GPT-2's exact regex (use_regex=True), so a GGUF export can declare the `gpt-2` pre-tokenizer.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _corpus(texts_or_files: Any) -> tuple[Iterable[str], int | None]:
    """Turn the user's input into (iterator of texts, number of texts if known)."""
    if looks_like_files(texts_or_files):
        items = [texts_or_files] if isinstance(texts_or_files, (str, os.PathLike)) else texts_or_files
        return iter_source_texts(items), None
    if isinstance(texts_or_files, bytes):
        raise TypeError("texts_or_files must be file paths or an iterable of str, not bytes")
    try:
        length = len(texts_or_files)
    except TypeError:
        length = None  # a generator: the progress bar just counts
    return iter(texts_or_files), length


def wrap_tokenizer(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a trained ``tokenizers.Tokenizer`` with MiniMind's special tokens and chat template."""
    # BpeTrainer registers every reserved token as special; re-adding ids 21-35 with special=False
    # flips the flag in place (ids unchanged) so they survive skip_special_tokens=True.
    backend.add_tokens([added_token(i) for i in range(FIRST_NON_SPECIAL_ID, NUM_RESERVED)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        add_bos_token=False,
        add_eos_token=False,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        chat_template=chat_template(),
        response_template=copy.deepcopy(RESPONSE_TEMPLATE),
    )
    verify_reserved_tokens(tok)
    return tok


def verify_reserved_tokens(tok: PreTrainedTokenizerBase) -> None:
    """Raise ``RuntimeError`` if the reserved tokens' ids or special flags are not MiniMind's."""
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(NUM_RESERVED)):
        raise RuntimeError(f"reserved token ids are {ids}, expected 0..{NUM_RESERVED - 1}")
    decoder = tok.added_tokens_decoder
    for i in range(NUM_RESERVED):
        expected = added_token(i)
        if decoder[i].special != expected.special or decoder[i].normalized:
            raise RuntimeError(
                f"reserved token {decoder[i]!r} has wrong flags (expected special={expected.special})"
            )
    named = (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token)
    if named != (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN):
        raise RuntimeError(f"bos/eos/pad/unk tokens are {named}, not MiniMind's")


def train_tokenizer(
    texts_or_files: Any,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    show_progress: bool = True,
    min_frequency: int = 0,
    split_digits: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a MiniMind tokenizer.

    Args:
        texts_or_files: a file path, a list of file paths (``.jsonl``/``.json``/``.txt``, see
            :mod:`.corpus`), or any iterable of strings.
        vocab_size: total vocabulary size including the 36 reserved tokens (MiniMind uses 6400).
        show_progress: show the ``tokenizers`` progress bar.
        min_frequency: minimum pair frequency for a merge. 0 (the original's setting) always fills
            ``vocab_size`` when the corpus allows, so model configs can rely on it.
        split_digits: pre-tokenize with Qwen2's regex, one digit per piece (default: the original's
            GPT-2 regex, where a number like 2024 can become one token).

    Raises:
        ValueError: if ``vocab_size`` < 292 (reserved tokens + 256 bytes) or a file is missing,
            unreadable or malformed (the message names the file).
    """
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be at least {MIN_VOCAB_SIZE} ({NUM_RESERVED} reserved tokens + 256 byte "
            f"tokens), got {vocab_size!r}"
        )
    texts, length = _corpus(texts_or_files)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=show_progress,
        special_tokens=reserved_added_tokens(),  # trainer assigns ids in this order: 0..35
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend = _build_backend(split_digits)
    logger.info("training byte-level BPE tokenizer (vocab_size=%d) on %s texts", vocab_size, length or "?")
    backend.train_from_iterator(texts, trainer=trainer, length=length)
    got = backend.get_vocab_size()
    if got < vocab_size:
        logger.warning("corpus too small: trained vocab has %d tokens, %d requested", got, vocab_size)
    tok = wrap_tokenizer(backend)
    logger.info("trained tokenizer with %d tokens", len(tok))
    return tok


def load_tokenizer(path: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerBase:
    """Load a saved MiniMind tokenizer with ``AutoTokenizer`` and check its reserved tokens."""
    tok = AutoTokenizer.from_pretrained(os.fspath(path), **kwargs)
    verify_reserved_tokens(tok)
    return tok
