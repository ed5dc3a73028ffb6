"""Command line: ``minimind-hf eval ...``.

    minimind-hf eval run MODEL [--tasks T ...] [--data-dir DIR] [--num-fewshot N] [--limit N]
                               [--apply-chat-template] [--batch-size N] [--out DIR]
    minimind-hf eval ppl MODEL --data FILE [FILE ...] [--max-length N] [--stride N] [--out FILE.json]
    minimind-hf eval tasks
    minimind-hf eval tools MODEL [--data FILE] [--limit N] [--tools NAME ...] [--max-turns N]
                                 [--out FILE.json]

``minimind-hf eval run MODEL`` runs C-Eval and CMMLU through lm-eval.
``add_eval_commands(subparsers)`` registers the ``eval`` group on the main CLI's argparse subparsers.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from minimind_hf.cli_logging import add_trust_remote_code_arg

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2


def _add_run(commands: argparse._SubParsersAction) -> None:
    from .catalog import DEFAULT_TASKS

    p = commands.add_parser(
        "run",
        help="C-Eval / CMMLU (or any lm-eval task) with lm-eval on a model folder",
        description="lm-eval's simple_evaluate with HFLM and our tasks (eval/tasks). "
        "Writes OUT/results.json (lm-eval's results) and OUT/results.md (a table per category).",
    )
    p.add_argument("model", metavar="MODEL", help="model folder (or Hugging Face Hub name)")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=list(DEFAULT_TASKS),
        metavar="TASK",
        help=f"task/group names (default: {' '.join(DEFAULT_TASKS)}); `eval tasks` lists ours, "
        "lm-eval's own names work too; comma-separated also accepted",
    )
    p.add_argument(
        "--data-dir",
        "--data_dir",
        default=None,
        metavar="DIR",
        help="folder holding ceval/{val,dev}/*.csv and cmmlu/{test,dev}/*.csv (official CSVs); "
        "default $MINIMIND_EVAL_DATA, else the Hugging Face Hub (ceval/ceval-exam, haonan-li/cmmlu)",
    )
    p.add_argument(
        "--num-fewshot",
        "--num_fewshot",
        type=int,
        default=None,
        metavar="N",
        help="few-shot examples from the dev split (default: the task's, 0; 5 for *_5shot tasks)",
    )
    p.add_argument(
        "--limit",
        type=float,
        default=None,
        metavar="N",
        help="documents per subject (a fraction if < 1): quick checks only, not comparable scores",
    )
    p.add_argument(
        "--apply-chat-template",
        "--apply_chat_template",
        action="store_true",
        help="wrap prompts in the tokenizer's chat template (for SFT/chat models)",
    )
    p.add_argument(
        "--no-fewshot-as-multiturn",
        "--no_fewshot_as_multiturn",
        dest="fewshot_as_multiturn",
        action="store_false",
        help="with --apply-chat-template, put few-shot examples in one user turn instead of several turns",
    )
    p.add_argument(
        "--system-instruction",
        "--system_instruction",
        default=None,
        metavar="TEXT",
        help="system prompt prepended to each prompt",
    )
    p.add_argument(
        "--batch-size", "--batch_size", default="8", metavar="N", help="batch size, or 'auto' (default 8)"
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", default="auto", help="model dtype: auto, float32, bfloat16, ... (default auto)")
    p.add_argument("--out", default="runs/eval", metavar="DIR", help="output folder (default runs/eval)")
    p.add_argument(
        "--log-samples",
        "--log_samples",
        action="store_true",
        help="also write every prompt and score, samples_<task>_<date>.jsonl in lm-eval's format",
    )
    p.add_argument("--seed", type=int, default=1234)
    add_trust_remote_code_arg(p)
    p.set_defaults(func=_run)


def _add_ppl(commands: argparse._SubParsersAction) -> None:
    from .perplexity import DEFAULT_MAX_LENGTH

    p = commands.add_parser(
        "ppl",
        help="perplexity and bits-per-byte of a model on text (sliding window, every token scored once)",
        description="Scores each document's text tokens once (a BOS/EOS prefix is context only); "
        "bits-per-byte divides by the UTF-8 bytes of the text, so models with different tokenizers compare.",
    )
    p.add_argument("model", metavar="MODEL", help="model folder (or Hugging Face Hub name)")
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="FILE",
        help=".jsonl/.json/.parquet with a 'text' field (one document per row), or .txt (one document)",
    )
    p.add_argument(
        "--max-length",
        "--max_length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        metavar="N",
        help=f"window length in tokens, e.g. the training context (default {DEFAULT_MAX_LENGTH})",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        metavar="N",
        help="window step (default max-length/2); lm-eval's rolling windows of L tokens are --max-length L+1 "
        "--stride L",
    )
    p.add_argument("--batch-size", "--batch_size", type=int, default=8, metavar="N")
    p.add_argument(
        "--prefix",
        choices=("auto", "bos", "eos"),
        default="auto",
        help="context token before each document (auto: BOS if the tokenizer has one, else EOS)",
    )
    p.add_argument(
        "--score-eos", "--score_eos", action="store_true", help="also score an EOS after each document"
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N documents of each file only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the result as JSON")
    add_trust_remote_code_arg(p)
    p.set_defaults(func=_ppl)


def _add_tools(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "tools",
        help="tool-call evaluation with mock tool execution (call rates, argument match, answer accuracy)",
        description="Runs each conversation through the rollout engine with the tools executed between turns "
        "(greedy) and prints: tool-call rate, well-formed calls, right tool, argument match, final-answer "
        "accuracy with a 95%% interval, mean turns. Default data: held-out arithmetic problems, each "
        "expecting one calculator call.",
    )
    p.add_argument("model", metavar="MODEL", help="model folder")
    p.add_argument(
        "--data", default=None, metavar="FILE", help="rl records (conversation, tools, gt); default: built-in"
    )
    p.add_argument("--limit", type=int, default=0, help="rows (0 = all of --data, 200 built-in)")
    p.add_argument(
        "--tools",
        nargs="+",
        default=["calculator", "unit_convert", "lookup", "current_time"],
        help="tools from minimind_hf.tools that run when called",
    )
    p.add_argument("--max-turns", "--max_turns", type=int, default=3)
    p.add_argument(
        "--max-new-tokens",
        "--max_new_tokens",
        type=int,
        default=128,
        help="sampled tokens per row, all turns",
    )
    p.add_argument("--batch-size", "--batch_size", type=int, default=32)
    p.add_argument("--think", action="store_true", help="prompts open a <think> block")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the summary and every row")
    add_trust_remote_code_arg(p)
    p.set_defaults(func=_tools)


def _tools(args: argparse.Namespace) -> int:
    from .tool_calls import run_tool_eval

    if problem := _model_problem(args.model):
        logger.error("%s", problem)
        return EXIT_USAGE
    return run_tool_eval(args)


def _add_tasks(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("tasks", help="list our lm-eval task and group names")
    p.set_defaults(func=_list_tasks)


def add_eval_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` (``run``, ``ppl``, ``tools``, ``tasks``) on ``subparsers``; return its parser."""
    parser = subparsers.add_parser(
        "eval",
        help="C-Eval/CMMLU with lm-eval, perplexity and bits-per-byte, tool-call evaluation",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="eval_command", metavar="{run,ppl,tools,tasks}", required=True)
    _add_run(commands)
    _add_ppl(commands)
    _add_tools(commands)
    _add_tasks(commands)
    return parser


def _split_tasks(values: list[str]) -> list[str]:
    return [t for v in values for t in v.split(",") if t]


def _model_problem(model: str) -> str | None:
    """A local MODEL that is missing or not a model folder, said before anything loads (else lm-eval and
    transformers take the path for a Hub name and fail with a repo-id error)."""
    from minimind_hf.data.sources import looks_local
    from minimind_hf.native.common import folder_problems

    path = Path(model).expanduser()
    if not path.exists():
        return f"MODEL: no such folder {model!r}" if looks_local(model) else None
    if not path.is_dir():
        return f"MODEL: {model!r} is a file; give the model folder"
    problems = folder_problems(model, None, "MODEL")
    return problems[0] if problems else None


def _run(args: argparse.Namespace) -> int:
    from .catalog import TaskSelectionError
    from .data import EvalDataError
    from .runner import EvalSettings, run_lm_eval

    if problem := _model_problem(args.model):
        logger.error("%s", problem)
        return EXIT_USAGE

    batch = args.batch_size if args.batch_size.startswith("auto") else int(args.batch_size)
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    settings = EvalSettings(
        model=args.model,
        tasks=_split_tasks(args.tasks),
        data_dir=args.data_dir,
        out_dir=Path(args.out),
        num_fewshot=args.num_fewshot,
        limit=limit,
        apply_chat_template=args.apply_chat_template,
        fewshot_as_multiturn=args.fewshot_as_multiturn,
        system_instruction=args.system_instruction,
        batch_size=batch,
        device=args.device,
        dtype=args.dtype,
        log_samples=args.log_samples,
        seed=args.seed,
        trust_remote_code=args.trust_remote_code,
    )
    try:
        outcome = run_lm_eval(settings)
    except Exception as err:
        # lm-eval imports tasks/utils.py under its own module name: its EvalDataError is a twin of ours
        if isinstance(err, (EvalDataError, TaskSelectionError)) or type(err).__name__ == "EvalDataError":
            logger.error("%s", err)
            return EXIT_USAGE
        raise
    print(outcome.markdown)
    print(f"Results: {outcome.json_path} (lm-eval JSON), {outcome.markdown_path} (tables)")
    return EXIT_OK


def _ppl(args: argparse.Namespace) -> int:
    from .perplexity import load_model, perplexity, read_texts, write_result

    if problem := _model_problem(args.model):
        logger.error("%s", problem)
        return EXIT_USAGE

    try:
        texts = [t for f in args.data for t in read_texts(f, limit=args.limit)]
    except (FileNotFoundError, ValueError) as err:
        logger.error("--data: %s", err)
        return EXIT_USAGE
    model, tokenizer = load_model(
        args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )
    try:
        result = perplexity(
            model,
            tokenizer,
            texts,
            max_length=args.max_length,
            stride=args.stride,
            batch_size=args.batch_size,
            prefix=args.prefix,
            score_eos=args.score_eos,
        )
    except ValueError as err:
        logger.error("%s", err)
        return EXIT_USAGE
    print(
        f"model {args.model} on {' '.join(args.data)}: {result.documents} documents, {result.tokens} tokens, "
        f"{result.bytes} bytes (window {result.max_length}, stride {result.stride})"
    )
    print(
        f"perplexity {result.perplexity:.4f}  bits/token {result.bits_per_token:.4f}  "
        f"bits/byte {result.bits_per_byte:.4f}"
    )
    if args.out:
        path = write_result(
            result,
            args.out,
            {"model": args.model, "data": args.data, "prefix": args.prefix, "score_eos": args.score_eos},
        )
        print(f"Result: {path}")
    return EXIT_OK


def _list_tasks(args: argparse.Namespace) -> int:
    from .catalog import (
        ENGLISH_BENCHMARKS,
        ENGLISH_GROUP,
        ORIGINAL_GROUP,
        TASK_PREFIX,
        group_members,
        subject_tasks,
    )

    print("groups:")
    for name, members in group_members().items():
        print(f"  {name}  ({len(members)} members)")
    print(f"subject tasks ({len(subject_tasks())}):")
    for name in subject_tasks():
        print(f"  {name}")
    print(f"English benchmarks (official release files in --data-dir; group {ENGLISH_GROUP}):")
    for name in ENGLISH_BENCHMARKS:
        print(f"  {TASK_PREFIX}{name}")
    print(f"{ORIGINAL_GROUP}: the original MiniMind's whole table (C-Eval, CMMLU and the English benchmarks)")
    return EXIT_OK
