"""Command line: ``minimind-hf tokenizer train --data FILE [FILE ...] --out DIR [--vocab-size N]``.

``add_tokenizer_commands(subparsers)`` registers the ``tokenizer`` command group on the main CLI's
argparse subparsers; ``run(args)`` executes a parsed command and returns the exit code.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .corpus import iter_source_texts
from .train import DEFAULT_VOCAB_SIZE, train_tokenizer

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's code for bad input; also used for missing/unreadable data files

SAMPLE_TEXT = "你好，MiniMind! Hello world. <think>\n思考\n</think>\n\n答案<|im_end|>"


def add_tokenizer_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tokenizer train`` on ``subparsers`` and return the ``tokenizer`` parser."""
    parser = subparsers.add_parser("tokenizer", help="train a MiniMind byte-level BPE tokenizer")
    commands = parser.add_subparsers(dest="tokenizer_command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train",
        help="train a tokenizer on text files and save it (loadable with AutoTokenizer)",
        description="Train a byte-level BPE tokenizer with MiniMind's 36 reserved tokens and chat template.",
    )
    train.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="FILE",
        help="files (.jsonl/.json/.parquet, gzipped too; 'text' or 'conversations' records; .txt one text "
        "per line), folders of them, demo:PART[:N] or Hub dataset names",
    )
    train.add_argument("--out", required=True, metavar="DIR", help="output folder for save_pretrained")
    train.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_VOCAB_SIZE,
        metavar="N",
        help=f"vocabulary size including reserved tokens (default {DEFAULT_VOCAB_SIZE})",
    )
    train.add_argument("--min-frequency", type=int, default=0, metavar="N", help="minimum merge frequency")
    train.add_argument(
        "--split-digits",
        action="store_true",
        help="one token per digit (Qwen2's pre-tokenizer) instead of the original's GPT-2 regex",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(func=run)
    return parser


def _train(args: argparse.Namespace) -> int:
    tok = train_tokenizer(
        iter_source_texts(args.data),  # always sources: a mistyped path is an error, never text
        vocab_size=args.vocab_size,
        show_progress=not args.no_progress,
        min_frequency=args.min_frequency,
        split_digits=args.split_digits,
    )
    out = Path(args.out)
    tok.save_pretrained(out)
    ids = tok(SAMPLE_TEXT)["input_ids"]
    logger.info("saved tokenizer to %s (vocab size %d)", out, len(tok))
    logger.info("sample %r -> %d tokens: %s", SAMPLE_TEXT, len(ids), ids)
    logger.info("tokens: %s", tok.convert_ids_to_tokens(ids))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``tokenizer`` command; returns the process exit code."""
    if getattr(args, "tokenizer_command", None) != "train":
        logger.error("unknown tokenizer command: %s", getattr(args, "tokenizer_command", None))
        return EXIT_USAGE
    try:
        return _train(args)
    except ValueError as err:
        # Bad input (missing/unreadable/malformed file, bad vocab size): a message, not a traceback.
        logger.error("%s", err)
        return EXIT_USAGE
