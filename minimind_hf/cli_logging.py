"""One logging set-up for every `minimind-hf` entry point (the main CLI and each `python -m ...cli`)."""

import logging


def configure_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with `verbose`) to stderr, with time and logger name."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
