"""`minimind-hf`: the command line front door.

    minimind-hf quickstart [--out DIR] [--data FILE ...] [--max-steps N]
    minimind-hf tokenizer train --data FILE [FILE ...] --out DIR [--vocab-size N]
    minimind-hf train STAGE --config RECIPE.yaml [--key value ...]   (recipes ls / recipes cp: the shipped configs)
    minimind-hf convert {to-qwen3,from-qwen3,from-pth,to-pth,merge-lora,to-gguf,to-ollama} ...
    minimind-hf eval ...            (C-Eval / CMMLU through lm-eval; `eval ppl` for perplexity and bits-per-byte)
    minimind-hf serve MODEL_DIR     (OpenAI-compatible server); chat MODEL_DIR; webui MODEL_DIR

Each command group lives beside its code and registers itself here; importing a group is cheap (heavy
libraries load only when its command runs).
"""

import argparse
import logging
import sys
from pathlib import Path

from .cli_errors import run_guarded
from .cli_logging import configure_logging
from .convert.cli import add_convert_commands
from .eval.cli import add_eval_commands
from .recipes.cli import add_recipes_commands, add_train_commands
from .serve.cli import add_serve_commands
from .tokenizer.cli import add_tokenizer_commands


def _add_quickstart(subparsers: argparse._SubParsersAction) -> None:
    from .quickstart import QuickstartSettings

    d = QuickstartSettings(out_dir=Path("runs/quickstart"))
    p = subparsers.add_parser(
        "quickstart",
        help="tokenizer -> pretrain -> SFT (with tool use) -> agentic RL on a built-in corpus on this CPU, then "
        "held-out accuracy",
        description="Built-in corpus -> tokenizer -> packed pretraining -> SFT (conversations + calculator calls) "
        "-> agentic RL (multi-turn rollouts that run the calculator; --no-tools: single-turn GRPO) -> Hugging "
        "Face folder -> sample answers and held-out accuracy after SFT and after RL.",
    )
    p.add_argument("--out", default=str(d.out_dir), help=f"output folder (default {d.out_dir})")
    p.add_argument(
        "--data",
        nargs="+",
        default=[],
        metavar="FILE",
        help="pretrain jsonl files ({'text': ...}) instead of the built-in pretrain text "
        "(SFT and RL still use the built-in conversations and prompts)",
    )
    p.add_argument(
        "--preset", default=None, help="model preset, e.g. for a GPU (default: a 1.1M-parameter CPU model)"
    )
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument(
        "--split-digits",
        action=argparse.BooleanOptionalAction,
        default=d.split_digits,
        help="tokenize numbers digit by digit (Qwen2's pre-tokenizer; default on) or, with "
        "--no-split-digits, the original's GPT-2 way (whole numbers as tokens)",
    )
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="pretrain / SFT rows per step")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="pretraining steps")
    p.add_argument("--lr", type=float, default=d.learning_rate, help="pretraining learning rate")
    p.add_argument(
        "--sft-steps", type=int, default=None, help="SFT steps (default 2/3 of max-steps; 0 = skip)"
    )
    p.add_argument("--sft-lr", type=float, default=d.sft_learning_rate)
    p.add_argument("--sft-conversations", type=int, default=d.sft_conversations)
    p.add_argument(
        "--pretrain-docs",
        type=int,
        default=d.pretrain_docs,
        help="size of the generated pretrain corpus (documents)",
    )
    p.add_argument(
        "--tools",
        action=argparse.BooleanOptionalAction,
        default=d.tools,
        help="tool-use SFT + agentic RL with the calculator, evaluated with the tool (default on); "
        "--no-tools = the single-turn GRPO pipeline",
    )
    p.add_argument("--tool-conversations", type=int, default=d.tool_conversations, help="tool-use SFT rows")
    p.add_argument(
        "--tool-direct-share",
        type=float,
        default=d.tool_direct_share,
        help="share of the tool-use SFT rows answered without calling the calculator (RL learns when to call)",
    )
    p.add_argument("--grpo-steps", type=int, default=d.grpo_steps, help="RL steps (agent or GRPO; 0 = skip)")
    p.add_argument("--grpo-prompts", type=int, default=d.grpo_prompts, help="GRPO prompts per step")
    p.add_argument("--grpo-group", type=int, default=d.grpo_group, help="GRPO samples per prompt")
    p.add_argument("--grpo-lr", type=float, default=d.grpo_learning_rate)
    p.add_argument("--grpo-beta", type=float, default=d.grpo_beta, help="KL coefficient (0 = no reference)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=d.max_new_tokens,
        help="completion budget (all turns) for RL samples and the held-out evaluation",
    )
    p.add_argument(
        "--eval-problems",
        type=int,
        default=d.eval_problems,
        help="held-out problems scored after SFT and after RL (greedy)",
    )
    p.add_argument(
        "--novel-problems",
        type=int,
        default=d.novel_problems,
        help="held-out problems in wordings no training generator uses, scored separately (0 = skip)",
    )
    p.add_argument("--samples", type=int, default=d.samples, help="sample answers printed at the end")
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch CPU threads (0 = default; 1 is often faster on a busy machine)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import QuickstartSettings, run_quickstart

    for f in args.data:
        if not Path(f).is_file():
            logging.getLogger("minimind_hf").error("--data: no such file: %s", f)
            return 2
    settings = QuickstartSettings(
        out_dir=Path(args.out),
        data=args.data,
        preset=args.preset,
        vocab_size=args.vocab_size,
        split_digits=args.split_digits,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        sft_steps=args.sft_steps,
        sft_learning_rate=args.sft_lr,
        sft_conversations=args.sft_conversations,
        pretrain_docs=args.pretrain_docs,
        tools=args.tools,
        tool_conversations=args.tool_conversations,
        tool_direct_share=args.tool_direct_share,
        grpo_steps=args.grpo_steps,
        grpo_prompts=args.grpo_prompts,
        grpo_group=args.grpo_group,
        grpo_learning_rate=args.grpo_lr,
        grpo_beta=args.grpo_beta,
        max_new_tokens=args.max_new_tokens,
        eval_problems=args.eval_problems,
        novel_problems=args.novel_problems,
        samples=args.samples,
        threads=args.threads,
        seed=args.seed,
    )
    summary = run_quickstart(settings)
    print(
        f"\nModel folder: {summary['model_dir']}  ({summary['parameters'] / 1e6:.2f}M parameters, "
        f"vocab {summary['vocab_size']})"
    )
    print(
        f"Pretraining loss: {summary['first_loss']:.3f} -> {summary['final_loss']:.3f} "
        f"in {summary['train_seconds']}s"
    )
    if "sft_final_loss" in summary:
        print(
            f"SFT loss: {summary['sft_first_loss']:.3f} -> {summary['sft_final_loss']:.3f} "
            f"in {summary['sft_seconds']}s"
        )
    rl = "agentic RL (calculator)" if summary.get("tools") else "GRPO"
    if "grpo_seconds" in summary:
        print(
            f"{rl}: {summary['grpo_steps']} steps, mean reward {summary['grpo_reward_mean_first_quarter']:.2f} "
            f"(first quarter) -> {summary['grpo_reward_mean_last_quarter']:.2f} (last quarter) "
            f"in {summary['grpo_seconds']}s"
        )
    print("Held-out problems (never seen in training):")
    for s in summary["samples"]:
        mark = "ok " if s["correct"] else "   "
        print(f"  [{mark}] {s['prompt']!r} -> {s['completion'].strip()[:120]!r} (answer {s['answer']})")
    tool = ", with the calculator" if summary.get("tools") else ""
    for name, title in (("heldout", "held-out accuracy"), ("novel", "new wordings")):
        sft, after = summary[name]["sft"], summary[name]["rl"]
        if not sft["n"]:
            continue
        print(
            f"{title}: {_pct(sft)} after SFT -> {_pct(after)} after {rl} ({sft['n']} problems, greedy{tool}; "
            f"tool-call rate {100 * sft['tool_call_rate']:.0f}% -> {100 * after['tool_call_rate']:.0f}%)"
        )
    print(
        "Stage seconds: "
        + ", ".join(f"{k} {v}" for k, v in summary["stage_seconds"].items())
        + f"; total {summary['seconds']}s"
    )
    print(
        f"Load it anywhere: AutoModelForCausalLM.from_pretrained({summary['model_dir']!r}, trust_remote_code=True)"
    )
    return 0


def _pct(result: dict) -> str:
    lo, hi = result["ci95"]
    return f"{100 * result['accuracy']:.1f}% [{100 * lo:.0f}-{100 * hi:.0f}]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind-hf", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_quickstart(sub)
    add_tokenizer_commands(sub)
    add_train_commands(sub)
    add_recipes_commands(sub)
    add_convert_commands(sub)
    add_eval_commands(sub)
    add_serve_commands(sub)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """argparse takes an unambiguous prefix for a flag (``--out`` for ``--outtype``, ``--learning_rat`` for
    ``--learning_rate``): a typo then sets another option. Turn that off in every (sub)command."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_guarded(lambda: args.func(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
