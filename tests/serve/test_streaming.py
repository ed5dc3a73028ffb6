"""Incremental detokenization (never half a UTF-8 character) and stop strings."""

from __future__ import annotations

import random

import pytest

from minimind_hf.serve.streaming import REPLACEMENT_CHAR, IncrementalDecoder, StopMatcher
from minimind_hf.tokenizer import train_tokenizer

TEXTS = [
    "你好，世界！我是 MiniMind。",
    "Emoji 😀🚀👍🏽 and accents: café, naïve.",
    "<think>\n想一想\n</think>\n\n好的",
]


@pytest.fixture(scope="module")
def tok():
    # A small vocabulary, so Chinese characters and emoji are split over several byte tokens.
    return train_tokenizer(["hello world, this is a tiny corpus"] * 20, vocab_size=300, show_progress=False)


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_never_split_a_character_and_add_up(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(ids) > len(text) // 2, "the test needs multi-token characters"
    dec = IncrementalDecoder(tok)
    deltas = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(deltas) == tok.decode(ids, skip_special_tokens=True) == text
    assert not any(REPLACEMENT_CHAR in d for d in deltas)
    assert sum(1 for d in deltas if d) > 3  # really incremental


def test_incomplete_character_at_the_end_is_flushed(tok):
    ids = tok("😀", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    dec = IncrementalDecoder(tok)
    assert [dec.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert dec.flush() == REPLACEMENT_CHAR  # what decode() of the same ids gives


def test_stop_matcher_cuts_at_earliest_stop_across_chunks():
    text = "one two three four five six"
    rng = random.Random(0)
    for _ in range(100):
        m = StopMatcher(["five", "x y", "our f"])
        out, pos, hit = [], 0, False
        while pos < len(text) and not hit:
            n = rng.randint(1, 5)
            piece, hit = m.feed(text[pos : pos + n])
            out.append(piece)
            pos += n
        assert hit
        assert "".join(out) == "one two three f"  # "our f" starts before "five"


def test_stop_matcher_releases_held_text_when_not_a_stop():
    m = StopMatcher(["STOP"])
    assert m.feed("abc ST") == ("abc ", False)
    assert m.feed("ART") == ("START", False)
    assert m.feed("S") == ("", False)
    assert m.flush() == "S"
    assert StopMatcher().feed("anything") == ("anything", False)
