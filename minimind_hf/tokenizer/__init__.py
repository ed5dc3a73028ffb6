"""MiniMind tokenizer: byte-level BPE training, reserved tokens and the chat template.

    from minimind_hf.tokenizer import train_tokenizer
    tok = train_tokenizer(["pretrain.jsonl"], vocab_size=6400)
    tok.save_pretrained("out/tokenizer")   # loads back with AutoTokenizer.from_pretrained

The chat template renders exactly like the original MiniMind template and carries
``{% generation %}`` markers, so ``apply_chat_template(..., return_assistant_tokens_mask=True,
return_dict=True)`` gives the assistant (loss) mask for SFT.
"""

from .special_tokens import (
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKEN_IDS,
    SPECIAL_TOKENS,
    UNK_TOKEN,
)
from .template import RESPONSE_TEMPLATE, chat_template
from .train import DEFAULT_VOCAB_SIZE, load_tokenizer, train_tokenizer, verify_reserved_tokens, wrap_tokenizer

__all__ = [
    "BOS_TOKEN",
    "DEFAULT_VOCAB_SIZE",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "RESPONSE_TEMPLATE",
    "SPECIAL_TOKENS",
    "SPECIAL_TOKEN_IDS",
    "UNK_TOKEN",
    "chat_template",
    "load_tokenizer",
    "train_tokenizer",
    "verify_reserved_tokens",
    "wrap_tokenizer",
]
