"""Markdown tables per category from lm-eval's results dict (the ``results.md`` written beside
``results.json``).

One table per benchmark and few-shot setting found among the results: a row per category, then the
average. Category and average scores are recomputed here from the per-subject scores, weighted by the
number of questions scored (lm-eval's ``weight_by_size: true``), so they equal lm-eval's group scores
and also exist when only some subjects were run. CMMLU's "China specific" row overlaps the others and is
not part of its average (as in the CMMLU paper). A per-subject table follows in a ``<details>`` block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .catalog import ENGLISH_BENCHMARKS, subject_tasks
from .subjects import BENCHMARKS, CATEGORY_TITLES, CHINA_SPECIFIC

METRICS = ("acc", "acc_norm")
SPLIT_TITLES = {"ceval": "val", "cmmlu": "test"}


@dataclass
class Score:
    """Accuracy over a set of subjects: summed question counts and correct-weighted sums."""

    subjects: int = 0
    questions: int = 0
    acc_sum: float = 0.0
    acc_norm_sum: float = 0.0

    def add(self, n: int, acc: float, acc_norm: float) -> None:
        """Count one subject with ``n`` questions scored."""
        self.subjects += 1
        self.questions += n
        self.acc_sum += acc * n
        self.acc_norm_sum += acc_norm * n

    def mean(self, metric: str) -> float:
        """Size-weighted mean of ``metric`` (``acc`` or ``acc_norm``)."""
        total = self.acc_sum if metric == "acc" else self.acc_norm_sum
        return total / self.questions if self.questions else float("nan")


def _subject_rows(
    results: Mapping[str, Any],
) -> dict[tuple[str, str], dict[str, tuple[int, float, float, Any]]]:
    """``{(benchmark, variant): {subject: (n, acc, acc_norm, n_shot)}}`` for our subject tasks present."""
    table: dict[tuple[str, str], dict[str, tuple[int, float, float, Any]]] = {}
    names = subject_tasks()
    for task, metrics in results.get("results", {}).items():
        ref = names.get(task)
        if ref is None or "acc,none" not in metrics:
            continue
        n = int(results.get("n-samples", {}).get(task, {}).get("effective", 0))
        shots = results.get("n-shot", {}).get(task)
        table.setdefault((ref.benchmark, ref.variant), {})[ref.subject] = (
            n,
            float(metrics["acc,none"]),
            float(metrics.get("acc_norm,none", float("nan"))),
            shots,
        )
    return table


def category_scores(
    subject_scores: Mapping[str, tuple[int, float, float, Any]], benchmark: str
) -> dict[str, Score]:
    """Per-category and ``"average"`` scores (size-weighted) from ``{subject: (n, acc, acc_norm, ...)}``."""
    bench = BENCHMARKS[benchmark]
    scores = {c: Score() for c in bench.categories}
    scores["average"] = Score()
    for subject, (n, acc, acc_norm, *_) in subject_scores.items():
        for c in bench.subject(subject).categories:
            scores[c].add(n, acc, acc_norm)
        scores["average"].add(n, acc, acc_norm)
    return scores


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.2f}"


def _shots(rows: Mapping[str, tuple[int, float, float, Any]]) -> str:
    values = sorted({str(r[3]) for r in rows.values()})
    return f"{values[0]}-shot" if len(values) == 1 else f"mixed ({', '.join(values)})-shot"


def benchmark_table(benchmark: str, rows: Mapping[str, tuple[int, float, float, Any]]) -> str:
    """The category table and the per-subject details of one benchmark/setting."""
    bench = BENCHMARKS[benchmark]
    scores = category_scores(rows, benchmark)
    out = [
        f"### {bench.title} ({SPLIT_TITLES[benchmark]}), {_shots(rows)}\n\n",
        "| category | subjects | questions | acc | acc_norm |\n|---|---:|---:|---:|---:|\n",
    ]
    for c in bench.categories:
        s = scores[c]
        if s.subjects:
            note = " (overlaps)" if c == CHINA_SPECIFIC else ""
            out.append(
                f"| {CATEGORY_TITLES[c]}{note} | {s.subjects} | {s.questions} | {_pct(s.mean('acc'))} | "
                f"{_pct(s.mean('acc_norm'))} |\n"
            )
    s = scores["average"]
    out.append(
        f"| **Average** | {s.subjects} | {s.questions} | **{_pct(s.mean('acc'))}** | "
        f"{_pct(s.mean('acc_norm'))} |\n"
    )
    out.append(
        "\n<details><summary>per subject</summary>\n\n"
        "| subject | category | questions | acc | acc_norm |\n|---|---|---:|---:|---:|\n"
    )
    for subject in bench.subjects:
        if subject.name in rows:
            n, acc, acc_norm, _ = rows[subject.name]
            out.append(
                f"| {subject.name} ({subject.zh}) | {CATEGORY_TITLES[subject.category]} | {n} | "
                f"{_pct(acc)} | {_pct(acc_norm)} |\n"
            )
    out.append("\n</details>\n\n")
    return "".join(out)


def markdown_report(results: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> str:
    """The whole ``results.md``: a header line, then a table per benchmark and few-shot setting.

    Tasks that are not ours (e.g. ``hellaswag``) are listed with their lm-eval metrics at the end.
    """
    parts = ["# Evaluation results\n\n"]
    if header:
        parts.append(" · ".join(f"{k}: `{v}`" for k, v in header.items()) + "\n\n")
        if header.get("limit"):
            parts.append(
                f"**limit={header['limit']} documents per subject: not comparable with full-set scores.**\n\n"
            )
    parts.append(
        "Accuracy in %, weighted by the number of questions (lm-eval's group aggregation); chance is 25.\n\n"
    )
    tables = _subject_rows(results)
    for benchmark in BENCHMARKS:
        for (b, _variant), rows in sorted(tables.items()):
            if b == benchmark:
                parts.append(benchmark_table(benchmark, rows))
    parts.append(english_table(results))
    names = subject_tasks()
    others = [t for t in results.get("results", {}) if t not in names and not t.startswith("minimind_")]
    if others:
        parts.append("### Other tasks\n\n| task | metric | value |\n|---|---|---:|\n")
        for task in others:
            for key, value in results["results"][task].items():
                if key != "alias" and "stderr" not in key and isinstance(value, (int, float)):
                    parts.append(f"| {task} | {key} | {value:.4f} |\n")
    return "".join(parts)


ENGLISH_TITLES = {
    "arc_easy": "ARC-Easy", "openbookqa": "OpenBookQA", "piqa": "PIQA", "hellaswag": "HellaSwag",
    "siqa": "Social IQa",
}  # fmt: skip


def english_table(results: Mapping[str, Any]) -> str:
    """One row per English benchmark run (acc and acc_norm in %, documents scored); "" when none was."""
    scores = results.get("results", {})
    rows = []
    for name in ENGLISH_BENCHMARKS:
        task = f"minimind_{name}"
        if task not in scores:
            continue
        n = results.get("n-samples", {}).get(task, {}).get("effective", "")
        acc, norm = scores[task].get("acc,none"), scores[task].get("acc_norm,none")
        shown = [f"{100 * v:.2f}" if isinstance(v, (int, float)) else "-" for v in (acc, norm)]
        rows.append(f"| {ENGLISH_TITLES[name]} | {n} | {shown[0]} | {shown[1]} |\n")
    if not rows:
        return ""
    return (
        "### English benchmarks\n\n| benchmark | documents | acc | acc_norm |\n|---|---:|---:|---:|\n"
        + "".join(rows)
        + "\n"
    )
