"""`minimind-hf train <stage> --config FILE [key=value ...]`: run a native training stage.

    minimind-hf train pretrain --config pretrain.yaml max_steps=200 output_dir=runs/pt
    minimind-hf train sft --config sft.yaml model=runs/pt --dry-run      # validate + print the config only
    python -m minimind_hf.native.cli train pretrain --config pretrain.yaml
    accelerate launch --num_processes 2 -m minimind_hf.native.cli train pretrain --config pretrain.yaml

The config is a YAML or JSON mapping of the stage's dataclass fields; ``key=value`` overrides follow it.
Everything is validated before any work starts; all problems are reported together. Stages come from
`minimind_hf.native.stages` (each algorithm module registers its own).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from .stages import STAGE_MODULES, get_stage

__all__ = ["add_train_commands", "main"]

logger = logging.getLogger("minimind_hf")


def add_train_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train <stage> --config FILE [key=value ...]`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "train",
        help="run a native training stage (pretrain, sft, ...) from a YAML/JSON config",
        description=__doc__.split("\n\n")[0],
        epilog="stages: " + ", ".join(STAGE_MODULES) + ". Show a stage's keys and defaults: "
        "minimind-hf train STAGE --dry-run",
    )
    p.add_argument("stage", help="one of: " + ", ".join(STAGE_MODULES))
    p.add_argument(
        "--config", default=None, metavar="FILE", help="YAML or JSON config (keys = the stage's fields)"
    )
    p.add_argument("--dry-run", action="store_true", help="validate the config, print it, and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys (YAML values)")
    p.set_defaults(func=run_train_command)
    p.__class__ = _IntermixedParser  # `train sft --config F k=v` and `train sft k=v --config F` both work
    return p


class _IntermixedParser(argparse.ArgumentParser):
    """Parses options and positionals in any order (plain argparse stops taking positionals after an option)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def run_train_command(args: argparse.Namespace) -> int:
    from ..data import RecordError
    from .config import ConfigError, config_to_dict, load_config

    try:
        stage = get_stage(args.stage)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(stage.config_cls, args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    try:
        result = stage.run(cfg)
    except RecordError as e:
        print(f"error: invalid {args.stage} data: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # one summary line, not one per DDP process
        summary = {k: v for k, v in dataclasses.asdict(result).items() if k != "losses"}
        summary["final_loss"] = result.losses[-1] if result.losses else None
        print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minimind-hf", description="native trainers")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
