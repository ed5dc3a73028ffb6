"""`minimind-hf`: the command line front door.

    minimind-hf quickstart [--out DIR] [--data FILE ...] [--max-steps N]
    minimind-hf tokenizer train --data FILE [FILE ...] --out DIR [--vocab-size N]
"""

import argparse
import logging
import sys
from pathlib import Path

from .tokenizer.cli import add_tokenizer_commands


def _add_quickstart(subparsers: argparse._SubParsersAction) -> None:
    from .quickstart import QuickstartSettings

    d = QuickstartSettings(out_dir=Path("runs/quickstart"))
    p = subparsers.add_parser(
        "quickstart",
        help="train a tokenizer and a small model on a built-in corpus on this CPU, then generate",
        description="Built-in corpus -> tokenizer -> packed pretraining -> Hugging Face folder -> generation.",
    )
    p.add_argument("--out", default=str(d.out_dir), help=f"output folder (default {d.out_dir})")
    p.add_argument("--data", nargs="+", default=[], metavar="FILE",
                   help="pretrain jsonl files ({'text': ...}) instead of the built-in corpus")
    p.add_argument("--preset", default=None, help="model preset (default: a 1.6M-parameter CPU model)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--pretrain-docs", type=int, default=d.pretrain_docs,
                   help="size of the generated pretrain corpus (documents)")
    p.add_argument("--samples", type=int, default=d.samples, help="held-out prompts to complete at the end")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import QuickstartSettings, run_quickstart

    for f in args.data:
        if not Path(f).is_file():
            logging.getLogger("minimind_hf").error("--data: no such file: %s", f)
            return 2
    settings = QuickstartSettings(
        out_dir=Path(args.out), data=args.data, preset=args.preset, vocab_size=args.vocab_size,
        seq_len=args.seq_len, batch_size=args.batch_size, max_steps=args.max_steps, learning_rate=args.lr,
        pretrain_docs=args.pretrain_docs, samples=args.samples, seed=args.seed,
    )
    summary = run_quickstart(settings)
    print(f"\nModel folder: {summary['model_dir']}  ({summary['parameters'] / 1e6:.2f}M parameters, "
          f"vocab {summary['vocab_size']})")
    print(f"Pretraining loss: {summary['first_loss']:.3f} -> {summary['final_loss']:.3f} "
          f"in {summary['train_seconds']}s")
    print("Held-out problems (never seen in training):")
    for s in summary["samples"]:
        mark = "ok " if s["correct"] else "   "
        print(f"  [{mark}] {s['prompt']!r} -> {s['completion'].strip()[:120]!r} (answer {s['answer']})")
    print(f"{summary['heldout_correct']}/{len(summary['samples'])} correct; total {summary['seconds']}s")
    print(f"Load it anywhere: AutoModelForCausalLM.from_pretrained({summary['model_dir']!r}, trust_remote_code=True)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind-hf", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_quickstart(sub)
    add_tokenizer_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
