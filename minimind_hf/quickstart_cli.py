"""`minimind-hf quickstart`: its options (one per `QuickstartSettings` field) and the summary it prints."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

# option dest -> QuickstartSettings field, where the short option name differs from the field's
_FIELD_OF_OPTION = {
    "out": "out_dir",
    "lr": "learning_rate",
    "sft_lr": "sft_learning_rate",
    "grpo_lr": "grpo_learning_rate",
}


def add_quickstart_command(subparsers: argparse._SubParsersAction) -> None:
    from .quickstart import QuickstartSettings

    defaults = QuickstartSettings(out_dir=Path("runs/quickstart"))
    p = subparsers.add_parser(
        "quickstart",
        help="tokenizer -> pretrain -> SFT (with tool use) -> agentic RL on a built-in corpus on this CPU, "
        "then held-out accuracy",
        description="Built-in corpus -> tokenizer -> packed pretraining -> SFT (conversations + calculator "
        "calls) -> agentic RL (multi-turn rollouts that run the calculator; --no-tools: single-turn GRPO) -> "
        "Hugging Face folder -> sample answers and held-out accuracy after SFT and after RL.",
    )
    _add_corpus_options(p, defaults)
    _add_training_options(p, defaults)
    _add_rl_and_eval_options(p, defaults)
    p.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help="torch CPU threads (0 = default; 1 is often faster on a busy machine)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.set_defaults(func=_run)


def _add_corpus_options(p: argparse.ArgumentParser, d) -> None:
    """Where the run writes, what it reads, the tokenizer and the model."""
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
    p.add_argument(
        "--pretrain-docs",
        type=int,
        default=d.pretrain_docs,
        help="size of the generated pretrain corpus (documents)",
    )
    p.add_argument("--sft-conversations", type=int, default=d.sft_conversations)
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
        help="share of the tool-use SFT rows answered without calling the calculator "
        "(RL learns when to call)",
    )


def _add_training_options(p: argparse.ArgumentParser, d) -> None:
    """Pretraining and SFT."""
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="pretrain / SFT rows per step")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="pretraining steps")
    p.add_argument("--lr", type=float, default=d.learning_rate, help="pretraining learning rate")
    p.add_argument(
        "--sft-steps", type=int, default=None, help="SFT steps (default 2/3 of max-steps; 0 = skip)"
    )
    p.add_argument("--sft-lr", type=float, default=d.sft_learning_rate)


def _add_rl_and_eval_options(p: argparse.ArgumentParser, d) -> None:
    """The RL stage (agentic RL with tools, else GRPO) and the held-out evaluation."""
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


def settings_from_args(args: argparse.Namespace):
    """The `QuickstartSettings` the parsed options describe (every quickstart option is a settings field)."""
    from .quickstart import QuickstartSettings

    fields = {f.name for f in dataclasses.fields(QuickstartSettings)}
    values = {_FIELD_OF_OPTION.get(k, k): v for k, v in vars(args).items()}
    values = {k: v for k, v in values.items() if k in fields}
    values["out_dir"] = Path(values["out_dir"])
    return QuickstartSettings(**values)


def _run(args: argparse.Namespace) -> int:
    from .quickstart import run_quickstart

    for f in args.data:
        if not Path(f).is_file():
            logging.getLogger("minimind_hf").error("--data: no such file: %s", f)
            return 2
    _print_summary(run_quickstart(settings_from_args(args)))
    return 0


def _pct(result: dict) -> str:
    lo, hi = result["ci95"]
    return f"{100 * result['accuracy']:.1f}% [{100 * lo:.0f}-{100 * hi:.0f}]"


def _print_summary(summary: dict) -> None:
    """The run's result for the terminal: losses, RL reward, sample answers, held-out accuracy, timings."""
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
            f"{rl}: {summary['grpo_steps']} steps, mean reward "
            f"{summary['grpo_reward_mean_first_quarter']:.2f} (first quarter) -> "
            f"{summary['grpo_reward_mean_last_quarter']:.2f} (last quarter) in {summary['grpo_seconds']}s"
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
        f"Load it anywhere: AutoModelForCausalLM.from_pretrained({summary['model_dir']!r}, "
        "trust_remote_code=True)"
    )
