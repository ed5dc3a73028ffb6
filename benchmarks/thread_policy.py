"""Step time of native pretraining with another busy process on the machine, per thread policy.

    .venv/bin/python benchmarks/thread_policy.py [--steps 60] [--busy 1]

The quickstart's model and batch (1.6M parameters, 16 rows of 256 tokens, the built-in corpus) trained through
the real loop (`minimind_hf.native.loop.train`) three ways: ``num_threads`` fixed at all cores, fixed at 1,
and 0 (the `ThreadTuner`); each once on an idle machine and once beside ``--busy`` processes that spin a core
each (a pure-Python loop, like a tokenizer or an evaluation beside the run). Step time = the median of the
per-step times in ``train_log.jsonl`` after the first 10 steps. Goal (issue 13): beside one busy process the
default's step time <= 2x the idle machine's. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    while True:
        pass


def step_seconds(out_dir: Path, batch_tokens: int, skip: int) -> float:
    rows = [
        json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines() if line.strip()
    ]
    rates = [r["tokens_per_sec"] for r in rows if "tokens_per_sec" in r][skip:]
    return statistics.median(batch_tokens / r for r in rates)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--busy", type=int, default=1, help="busy processes beside the run")
    args = ap.parse_args(argv)

    import logging

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("minimind_hf.native.loop", "minimind_hf.native.pretrain", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from minimind_hf.data.demo_corpus import write_demo_corpus
    from minimind_hf.native.config import load_config
    from minimind_hf.native.pretrain import PretrainConfig, run_pretrain
    from minimind_hf.quickstart import QUICKSTART_MODEL

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tmp = Path(tempfile.mkdtemp(prefix="thread_policy_"))
    data = write_demo_corpus(tmp / "corpus", {"pretrain": 3000, "sft": 10, "rl": 10, "heldout": 10})[
        "pretrain"
    ]
    batch, seq = 16, 256
    policies = {f"fixed {cores}": cores, "fixed 1": 1, "tuned (default)": 0}
    result: dict = {"cores": cores, "busy_processes": args.busy, "steps": args.steps}
    t0 = time.time()
    for load in ("idle", "busy"):
        spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy if load == "busy" else 0)]
        for p in spinners:
            p.start()
        try:
            for label, threads in policies.items():
                out = tmp / f"{load}_{threads}"
                cfg = load_config(
                    PretrainConfig,
                    None,
                    {
                        "data": [str(data)],
                        "output_dir": str(out),
                        "preset": "tiny",
                        "model_overrides": QUICKSTART_MODEL,
                        "seq_len": seq,
                        "batch_size": batch,
                        "max_steps": args.steps,
                        "learning_rate": 3e-3,
                        "num_threads": threads,
                        "log_every": 1,
                        "report_to": ["none"],
                        "progress": False,
                        "compile": False,
                        "resume": "never",
                        "vocab_size": 2000,
                    },
                )
                run_pretrain(cfg)
                sec = step_seconds(out, batch * seq, skip=10)
                result.setdefault(load, {})[label] = round(sec, 4)
                print(f"{load:5s} {label:16s}: {sec:.3f} s/step", flush=True)
        finally:
            for p in spinners:
                p.terminate()
    for label in policies:
        result.setdefault("busy_vs_idle", {})[label] = round(result["busy"][label] / result["idle"][label], 2)
    # the figure the goal is about: the default beside a busy process vs the best idle step time
    result["default_busy_vs_best_idle"] = round(
        result["busy"]["tuned (default)"] / min(result["idle"].values()), 2
    )
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
