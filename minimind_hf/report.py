"""Run reports: ``report.md`` with PNG plots, so a learner sees what each stage taught
(nanochat's report card).

Every training stage writes ``report.md`` beside its model folder: the loss, reward (RL stages) and learning
rate per step, plotted from the run's log (our ``train_log.jsonl`` or the Trainer's ``log_history``), and a
table of the final figures. The quickstart writes one report for the whole pipeline: a plot per stage and
the held-out accuracies of the SFT and RL models as bars with their 95% intervals.

Plots use matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch),
so writing a report never disturbs a user's own plotting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "read_log",
    "step_records",
    "plot_curves",
    "plot_accuracy_bars",
    "write_stage_report",
    "write_quickstart_report",
]

# Curves drawn when the log has them: (log key, panel title). trl's Trainer names map onto ours.
CURVES = [
    ("loss", "loss"),
    ("reward", "mean reward"),
    ("tool_calls", "tool calls per rollout"),
    ("lr", "learning rate"),
]
_TRAINER_NAMES = {"learning_rate": "lr"}


def read_log(path: str | Path) -> list[dict]:
    """Training records (rows with a ``step``) from ``train_log.jsonl`` or a Trainer's
    ``trainer_state.json``."""
    path = Path(path)
    if not path.is_file():
        return []
    if path.suffix == ".json":  # transformers' trainer_state.json
        rows = json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return step_records(rows)


def step_records(rows: Sequence[dict]) -> list[dict]:
    """The rows that belong to a step (a Trainer's ``log_history`` also holds a final summary without one),
    with the Trainer's key names mapped onto ours (``learning_rate`` -> ``lr``)."""
    return [{_TRAINER_NAMES.get(k, k): v for k, v in row.items()} for row in rows if "step" in row]


def _figure(panels: int, height: float = 2.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * panels, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def plot_curves(records: Sequence[dict], path: str | Path, title: str) -> list[str]:
    """One PNG with a panel per curve in `CURVES` that the records hold; returns the curves drawn ([] = none,
    no file written)."""
    curves = [(k, t) for k, t in CURVES if any(isinstance(r.get(k), (int, float)) for r in records)]
    if not curves:
        return []
    fig, axes = _figure(len(curves))
    for ax, (key, label) in zip(axes, curves, strict=True):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 40 else None)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    fig.suptitle(title)
    fig.savefig(path)
    return [k for k, _ in curves]


def plot_accuracy_bars(groups: dict[str, dict[str, dict]], path: str | Path, title: str) -> None:
    """Bars of ``groups[set][model] = {"accuracy", "ci95": [lo, hi], "n"}`` with their intervals as error
    bars."""
    fig, (ax,) = _figure(1, height=3.0)
    names = list(groups)
    models = list(dict.fromkeys(m for g in groups.values() for m in g))
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        xs, ys, err = [], [], [[], []]
        for i, name in enumerate(names):
            res = groups[name].get(model)
            if not res or not res.get("n"):
                continue
            acc, (lo, hi) = 100 * res["accuracy"], res["ci95"]
            xs.append(i + (j - (len(models) - 1) / 2) * width)
            ys.append(acc)
            err[0].append(acc - 100 * lo)
            err[1].append(100 * hi - acc)
        bars = ax.bar(xs, ys, width, yerr=err, capsize=4, label=model)
        ax.bar_label(bars, fmt="%.0f%%", padding=2, fontsize=8)
    ax.set_xticks(range(len(names)), [f"{n} (n={_first_n(groups[n])})" for n in names])
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.savefig(path)


def _first_n(group: dict) -> int:
    return next((r["n"] for r in group.values() if r.get("n")), 0)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_stage_report(
    out_dir: str | Path, stage: str, records: Sequence[dict], facts: dict, backend: str = "native"
) -> Path | None:
    """``out_dir/report.md`` (+ ``training_curves.png``) for one training run. Never fails the run: a report
    that cannot be written is logged as a warning (the model folder is what matters)."""
    out = Path(out_dir)
    try:
        drawn = plot_curves(records, out / "training_curves.png", f"{stage} ({backend})")
        lines = [f"# {stage} report ({backend} backend)", ""]
        if drawn:
            lines += [f"![{', '.join(drawn)} per step](training_curves.png)", ""]
        else:
            lines += ["No logged steps to plot.", ""]
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in facts.items() if v is not None]
        path = out / "report.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    except Exception as err:  # a plotting failure must not cost the user the trained model
        logger.warning("could not write the run report in %s: %s", out, err)
        return None


def write_quickstart_report(out_dir: str | Path, summary: dict) -> Path:
    """``out_dir/report.md`` for the whole quickstart: per-stage curves, held-out accuracy bars, timings."""
    out = Path(out_dir)
    lines = ["# MiniMind quickstart report", ""]
    lines += [
        f"Model: {summary.get('parameters', 0) / 1e6:.2f}M parameters, vocabulary "
        f"{summary.get('vocab_size')}, total {summary.get('seconds')} s.",
        "",
    ]
    stages = [("pretrain", "pretraining"), ("sft", "supervised fine-tuning"), ("model", "RL")]
    for folder, title in stages:
        records = read_log(out / folder / "train_log.jsonl")
        png = f"{folder if folder != 'model' else 'rl'}_curves.png"
        if records and plot_curves(records, out / png, title):
            lines += [f"## {title}", "", f"![{title}]({png})", ""]
    groups = {
        label: summary[key]
        for key, label in (("heldout", "held-out"), ("novel", "new wordings"))
        if summary.get(key) and summary[key].get("sft", {}).get("n")
    }
    if groups:
        plot_accuracy_bars(groups, out / "heldout_accuracy.png", "held-out accuracy (95% intervals)")
        lines += ["## What RL taught", "", "![held-out accuracy](heldout_accuracy.png)", ""]
        lines += [
            "| set | model | accuracy | 95% interval | n | tool-call rate |",
            "|---|---|---|---|---|---|",
        ]
        for label, group in groups.items():
            for model, res in group.items():
                lo, hi = res["ci95"]
                lines.append(
                    f"| {label} | {model} | {100 * res['accuracy']:.1f}% | {100 * lo:.1f}-{100 * hi:.1f}% "
                    f"| {res['n']} | {100 * res['tool_call_rate']:.0f}% |"
                )
        lines.append("")
    seconds = summary.get("stage_seconds", {})
    if seconds:
        lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in seconds.items()] + [""]
    samples = summary.get("samples") or []
    if samples:
        lines += ["## Sample answers (held-out)", ""]
        for s in samples:
            mark = "correct" if s["correct"] else "wrong"
            completion = s["completion"].strip().replace("\n", " ")[:160]
            lines.append(f"- {s['prompt']} -> `{completion}` ({mark}, answer {s['answer']})")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
