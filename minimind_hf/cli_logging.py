"""What every `minimind-hf` entry point shares (the main CLI and each `python -m ...cli`): one logging set-up
and the flags that mean the same everywhere."""

import argparse
import logging


def configure_logging(verbose: bool = False, main_process: bool = True) -> None:
    """INFO (DEBUG with `verbose`) to stderr, with time and logger name; WARNING on the other processes of a
    distributed run (`main_process` false), as transformers and datasets do."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def add_trust_remote_code_arg(p: argparse.ArgumentParser) -> None:
    """``--trust-remote-code``: opt-in, so a tampered model folder never runs its code just by being
    loaded."""
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the Python files in the model folder (needed for models this package does not know; "
        "MiniMind folders load with the package's own classes without it)",
    )
