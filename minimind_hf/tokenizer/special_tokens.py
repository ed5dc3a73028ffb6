"""MiniMind's reserved tokens: ids 0..35, in a fixed order.

Ids 0-20 are true special tokens (dropped by ``skip_special_tokens=True``). Ids 21-35 (tool-call,
think and buffer tokens) are registered as *non-special* added tokens: they are still matched
atomically in text, but survive ``decode(..., skip_special_tokens=True)`` so that reasoning and tool
calls stay visible in decoded output, as in the original MiniMind tokenizer.
"""

from __future__ import annotations

from tokenizers import AddedToken

PAD_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"

# Order matters: the BPE trainer assigns ids in list order, so index == token id.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
    "<tts_text_bos_single>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
    *(f"<|buffer{i}|>" for i in range(1, 10)),
)

# Tokens with id >= this are added tokens with special=False.
FIRST_NON_SPECIAL_ID = 21
NUM_RESERVED = len(SPECIAL_TOKENS)

SPECIAL_TOKEN_IDS: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}


def is_special(token_id: int) -> bool:
    """Whether reserved ``token_id`` is a true special token (skipped when decoding)."""
    return token_id < FIRST_NON_SPECIAL_ID


def added_token(token_id: int) -> AddedToken:
    """The ``tokenizers.AddedToken`` for reserved id ``token_id`` with MiniMind's flags."""
    return AddedToken(
        SPECIAL_TOKENS[token_id],
        single_word=False,
        lstrip=False,
        rstrip=False,
        normalized=False,
        special=is_special(token_id),
    )


def reserved_added_tokens() -> list[AddedToken]:
    """All 36 reserved tokens as ``AddedToken`` objects, in id order."""
    return [added_token(i) for i in range(NUM_RESERVED)]


assert NUM_RESERVED == 36, NUM_RESERVED
