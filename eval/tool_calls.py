"""Tool-call evaluation: conversations run with mock tool execution, scored for calls and final answers.

    minimind-hf eval tools runs/quickstart/model                    # the built-in held-out set
    minimind-hf eval tools MODEL --data agent_rl.jsonl --limit 200  # rl records (the original's agent format)

Every row goes through the rollout engine (`minimind_hf.native.rollout`, greedy) with the tools executed
between turns, then:

- ``tool_call_rate``: rows that made at least one call;
- ``well_formed``: ``<tool_call>`` blocks whose body parses as a call, over all blocks written;
- ``right_tool``: rows whose calls name the expected tool (the built-in set knows it; for files, a tool the
  record offers);
- ``argument_match``: rows whose first call's arguments match the expected ones (a calculator expression with
  the same value counts; only where the data says what is expected);
- ``accuracy``: every ground-truth value found in the final answer (`minimind_hf.rewards.gt_coverage_reward`
  = 1), with a 95% Wilson interval;
- ``mean_turns``.

The built-in set: held-out arithmetic problems of the generated corpus (operand pairs no training generator
produces), each expecting one ``calculator`` call with the problem's expression.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "ToolEvalResult",
    "builtin_tool_eval_set",
    "evaluate_tool_calls",
    "load_tool_eval_file",
    "wilson_interval",
]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    return lo, 1.0 if successes == n else min(1.0, centre + half)


def builtin_tool_eval_set(n: int = 200, seed: int = 4321) -> list[dict]:
    """Held-out arithmetic problems as rl records with the expected ``calculator`` call."""
    from minimind_hf.data.demo_corpus import math_problems

    rows = []
    for p in math_problems(4 * n, seed, heldout=True, stream="tool-eval"):
        expr = p.meta.get("expr")
        if not expr:
            continue
        expression = " ".join(str(x) for x in expr)
        rows.append(
            {
                "prompt": [{"role": "user", "content": p.question}],
                "ground_truth": p.answer,
                "expected_calls": [{"name": "calculator", "arguments": {"expression": expression}}],
            }
        )
        if len(rows) == n:
            break
    return rows


def load_tool_eval_file(path: str | Path, limit: int = 0) -> list[dict]:
    """rl records from a file (prompt conversation, ``tools`` schemas, ``gt``), validated with file:line
    errors."""
    from minimind_hf.data import load_records

    records = load_records("rl", [str(path)])
    if limit:
        records = records.select(range(min(limit, len(records))))
    return [dict(r) for r in records]


@dataclass
class ToolEvalResult:
    n: int
    tool_call_rate: float
    well_formed: float | None  # None: no tool-call block was written
    right_tool: float | None
    argument_match: float | None  # None: the data names no expected arguments
    accuracy: float
    ci95: tuple[float, float]
    mean_turns: float
    rows: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "rows"}
        out["ci95"] = list(self.ci95)
        return out

    def markdown(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}%"

        lo, hi = self.ci95
        lines = [
            "| metric | value |",
            "|---|---|",
            f"| rows | {self.n} |",
            f"| tool-call rate | {pct(self.tool_call_rate)} |",
            f"| well-formed calls | {pct(self.well_formed)} |",
            f"| right tool | {pct(self.right_tool)} |",
            f"| argument match | {pct(self.argument_match)} |",
            f"| final-answer accuracy | {pct(self.accuracy)} (95% CI {100 * lo:.1f}-{100 * hi:.1f}%) |",
            f"| mean turns | {self.mean_turns:.2f} |",
        ]
        return "\n".join(lines)


def _same_arguments(name: str, got: str, expected: dict) -> bool:
    from minimind_hf.tools import TOOLS, run_tool_call

    try:
        args = json.loads(got) if isinstance(got, str) else dict(got)
    except json.JSONDecodeError:
        return False
    if not isinstance(args, dict):
        return False
    if name == "calculator":  # the same value is the same argument ("3+4" == "4 + 3")
        ours = run_tool_call(TOOLS, "calculator", args)
        theirs = run_tool_call(TOOLS, "calculator", expected)
        return not ours.startswith("error:") and ours == theirs
    return args == expected


def evaluate_tool_calls(
    model,
    tokenizer,
    records: Sequence[dict],
    tools: dict,
    *,
    max_turns: int = 3,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    open_thinking: bool = False,
) -> ToolEvalResult:
    """Run `records` with `tools` executed between turns (greedy) and score them
    (see the module docstring)."""
    from minimind_hf.native.rollout import rollout
    from minimind_hf.rewards import gt_coverage_reward
    from minimind_hf.serve.parser import parse_tool_call_body

    rows: list[dict] = []
    blocks = parsed = 0
    right = right_n = args_ok = args_n = correct = 0
    for start in range(0, len(records), batch_size):
        part = list(records[start : start + batch_size])
        plain = [{k: v for k, v in r.items() if k != "expected_calls"} for r in part]
        r = rollout(
            model,
            tokenizer,
            plain,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            generation_chunk=batch_size,
            open_thinking=open_thinking,
            tools=tools,
            max_turns=max_turns,
        )
        scores = gt_coverage_reward(r.texts, ground_truth=[x.get("ground_truth") for x in part])
        for i, record in enumerate(part):
            bodies = re.findall(r"<tool_call>(.*?)</tool_call>", r.transcripts[i], re.DOTALL)
            blocks += len(bodies)
            parsed += sum(parse_tool_call_body(b) is not None for b in bodies)
            calls = r.tool_calls[i]
            expected = record.get("expected_calls") or []
            offered = {t["function"]["name"] for t in (record.get("tools") or []) if "function" in t}
            wanted = {c["name"] for c in expected} or offered or set(tools)
            if calls or expected:
                right_n += 1
                right += bool(calls) and all(c["name"] in wanted for c in calls)
            if expected:
                args_n += 1
                args_ok += bool(calls) and _same_arguments(
                    calls[0]["name"], calls[0]["arguments"], expected[0]["arguments"]
                )
            ok = scores[i] == 1.0
            correct += ok
            rows.append(
                {
                    "prompt": record["prompt"][-1]["content"],
                    "answer": r.texts[i],
                    "ground_truth": record.get("ground_truth"),
                    "tool_calls": calls,
                    "turns": r.turns[i],
                    "correct": ok,
                }
            )
    n = len(rows)
    return ToolEvalResult(
        n=n,
        tool_call_rate=sum(bool(x["tool_calls"]) for x in rows) / n if n else 0.0,
        well_formed=parsed / blocks if blocks else None,
        right_tool=right / right_n if right_n else None,
        argument_match=args_ok / args_n if args_n else None,
        accuracy=correct / n if n else 0.0,
        ci95=wilson_interval(correct, n),
        mean_turns=sum(x["turns"] for x in rows) / n if n else 0.0,
        rows=rows,
    )


def run_tool_eval(args: Any) -> int:
    """``minimind-hf eval tools``: load, evaluate, print the table (and write the JSON when asked)."""
    import torch

    from minimind_hf.serve.chat import load_model
    from minimind_hf.tools import get_tools

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        tools = get_tools(args.tools)
    except KeyError as e:
        logger.error("--tools: %s", e.args[0])
        return 2
    try:
        model, tokenizer = load_model(args.model, dtype="float32", trust_remote_code=args.trust_remote_code)
    except (FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        return 2
    records = (
        load_tool_eval_file(args.data, args.limit) if args.data else builtin_tool_eval_set(args.limit or 200)
    )
    result = evaluate_tool_calls(
        model,
        tokenizer,
        records,
        tools,
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        open_thinking=args.think,
    )
    print(result.markdown())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps({"summary": result.summary(), "rows": result.rows}, ensure_ascii=False, indent=2),
            encoding="utf-8",
        )
        print(f"rows and summary: {args.out}")
    return 0
