"""`minimind-hf train STAGE --config YAML` and `minimind-hf recipes ls|cp`: the recipes from the command line.

    minimind-hf recipes ls                           # every shipped config, by preset and stage
    minimind-hf recipes cp sft tiny my_sft.yaml      # copy one to edit (never overwrites without --force)
    minimind-hf train sft --config my_sft.yaml --max_steps 100          # our native trainer
    minimind-hf train sft --config my_sft.yaml --backend trl            # the same YAML through trl
    minimind-hf train sft --config my_sft.yaml --dry_run true           # validate + print the native config
    accelerate launch -m minimind_hf.cli train sft --config my_sft.yaml # several processes

``train STAGE ARGS`` is ``recipes/STAGE.py --backend native ARGS``: the same YAML (trl's field names), the
same ``--key value`` overrides, the same validation (unknown keys and options the backend cannot honour are
errors). ``minimind-hf train STAGE --help`` lists every key of the stage.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path

__all__ = ["RECIPE_STAGES", "add_recipes_commands", "add_train_commands", "shipped_configs"]

# stage -> what it is (the recipe module is minimind_hf.recipes.<stage>)
RECIPE_STAGES = {
    "pretrain": "next-token prediction on text (trains a tokenizer when none is given)",
    "sft": "supervised fine-tuning on conversations (assistant tokens only, packed)",
    "lora": "SFT with LoRA adapters (adapter + merged model)",
    "dpo": "direct preference optimisation on chosen/rejected pairs",
    "grpo": "GRPO / DAPO / Dr. GRPO / CISPO with registry rewards",
    "spo": "SPO: one sample per prompt, a per-prompt value tracker (native only)",
    "agent": "agentic RL: GRPO / CISPO on multi-turn tool-calling rollouts (native only)",
    "ppo": "PPO with a critic, GAE and a KL penalty (native only)",
    "distill": "knowledge distillation from a teacher",
    "rloo": "REINFORCE leave-one-out (trl only: pass --backend trl)",
}

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> dict[str, dict[str, Path]]:
    """preset -> stage -> shipped YAML."""
    out: dict[str, dict[str, Path]] = {}
    for path in sorted(CONFIG_ROOT.glob("*/*.yaml")):
        out.setdefault(path.parent.name, {})[path.stem] = path
    return out


def add_train_commands(subparsers: argparse._SubParsersAction) -> None:
    stages = "\n".join(f"  {name:<9} {what}" for name, what in RECIPE_STAGES.items())
    p = subparsers.add_parser(
        "train",
        help="train a stage from a recipe YAML: minimind-hf train STAGE --config FILE [--key value ...]",
        description="Train one stage from a recipe YAML (trl's field names; see `minimind-hf recipes ls`). "
        "--key value flags override the YAML. Our native trainers unless --backend trl.",
        epilog=f"stages:\n{stages}\n\nEvery key of a stage: minimind-hf train STAGE --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="minimind-hf train STAGE --config FILE [--key value ...]",
    )
    p.add_argument(
        "stage", choices=list(RECIPE_STAGES), metavar="STAGE", help="one of: " + ", ".join(RECIPE_STAGES)
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="--config FILE and --key value overrides")
    p.set_defaults(func=run_train_command)


def run_train_command(args: argparse.Namespace) -> int:
    from .common import run_recipe

    recipe = importlib.import_module(f"minimind_hf.recipes.{args.stage}")
    argv = ["--backend", "native", *args.args]  # a later --backend on the command line wins
    return run_recipe(recipe.main, lambda: recipe.parse_args(argv))


def add_recipes_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recipes", help="list or copy the shipped recipe configs (ls, cp)")
    sub = p.add_subparsers(dest="recipes_command", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list the shipped configs")
    ls.set_defaults(func=_ls)
    cp = sub.add_parser("cp", help="copy a shipped config to edit: cp STAGE [PRESET] DEST")
    cp.add_argument("stage", choices=list(RECIPE_STAGES), metavar="STAGE")
    cp.add_argument("rest", nargs="+", metavar="[PRESET] DEST", help="preset (default tiny) and destination")
    cp.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    cp.set_defaults(func=_cp)


def _ls(args: argparse.Namespace) -> int:
    print(f"{'preset':<15} {'stage':<10} file")
    for preset, stages in shipped_configs().items():
        for stage, path in stages.items():
            print(f"{preset:<15} {stage:<10} {path}")
    print(
        "\ncopy one: minimind-hf recipes cp STAGE [PRESET] DEST; "
        "run it: minimind-hf train STAGE --config DEST"
    )
    return 0


def _cp(args: argparse.Namespace) -> int:
    if len(args.rest) > 2:
        print(
            "error: recipes cp STAGE [PRESET] DEST takes at most a preset and a destination", file=sys.stderr
        )
        return 2
    preset, dest = args.rest if len(args.rest) == 2 else ["tiny", args.rest[0]]
    configs = shipped_configs()
    if preset not in configs:
        print(f"error: unknown preset {preset!r}; shipped: {', '.join(configs)}", file=sys.stderr)
        return 2
    source = configs[preset].get(args.stage)
    if source is None:
        print(
            f"error: no {args.stage} config for {preset}; it has {', '.join(configs[preset])}",
            file=sys.stderr,
        )
        return 2
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not args.force:
        print(f"error: {target} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    print(f"copied {source.relative_to(CONFIG_ROOT.parent)} -> {target}")
    print(f"run it: minimind-hf train {args.stage} --config {target}")
    return 0
