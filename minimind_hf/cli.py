"""`minimind-hf`: the command line front door.

    minimind-hf quickstart [--out DIR] [--data FILE ...] [--max-steps N]
    minimind-hf tokenizer train --data FILE [FILE ...] --out DIR [--vocab-size N]
    minimind-hf train STAGE --config RECIPE.yaml [--key value ...]
                                    (recipes ls / recipes cp: the shipped configs)
    minimind-hf convert {to-qwen3,from-qwen3,from-pth,to-pth,merge-lora,to-gguf,to-ollama} ...
    minimind-hf eval ...            (C-Eval / CMMLU through lm-eval; `eval ppl` for perplexity and
                                    bits-per-byte)
    minimind-hf serve MODEL_DIR     (OpenAI-compatible server); chat MODEL_DIR; webui MODEL_DIR

Each command group lives beside its code and registers itself here; importing a group is cheap (heavy
libraries load only when its command runs).
"""

import argparse
import sys

from .cli_errors import run_guarded
from .cli_logging import configure_logging
from .convert.cli import add_convert_commands
from .eval.cli import add_eval_commands
from .quickstart_cli import add_quickstart_command
from .recipes.cli import add_recipes_commands, add_train_commands
from .serve.cli import add_serve_commands
from .tokenizer.cli import add_tokenizer_commands


class CommandParser(argparse.ArgumentParser):
    """argparse takes an unambiguous prefix for a flag (``--out`` for ``--outtype``, ``--learning_rat`` for
    ``--learning_rate``): a typo then sets another option. This parser refuses prefixes, and subcommand
    parsers inherit its class (argparse makes them with ``type(parent)``), so every command refuses them."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="minimind-hf", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_quickstart_command(sub)
    add_tokenizer_commands(sub)
    add_train_commands(sub)
    add_recipes_commands(sub)
    add_convert_commands(sub)
    add_eval_commands(sub)
    add_serve_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_guarded(lambda: args.func(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
