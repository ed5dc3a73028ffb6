"""Run C-Eval / CMMLU (or any lm-eval task) on a model folder with lm-eval's ``simple_evaluate``.

The model side is lm-eval's own ``HFLM`` (``pretrained=<folder or hub name>``; remote code opt-in), so
the scores are computed exactly as ``lm_eval --model hf`` would. The task side is ``eval/tasks`` (our include
path); lm-eval's ~15k built-in tasks are only indexed when a requested name is not one of ours (indexing
them takes ~20 s). Results go to ``<out>/results.json`` (lm-eval's results dict) and ``<out>/results.md``
(tables per category, see ``report.py``); with ``log_samples`` also ``<out>/samples_<task>_<date>.jsonl``
(lm-eval's format).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .catalog import (
    DEFAULT_TASKS,
    ORIGINAL_GROUP,
    TASK_PREFIX,
    TaskSelectionError,
    english_selected,
    expand,
    is_english,
)
from .data import TASKS_DIR, check_data_dir, check_english_data
from .report import markdown_report

logger = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """Everything ``run_lm_eval`` needs; defaults run both benchmarks 0-shot on the CPU."""

    model: str  # a model folder (or a Hub name)
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    data_dir: str | None = None  # folder holding ceval/ and cmmlu/; None: $MINIMIND_EVAL_DATA, else the Hub
    out_dir: Path = Path("runs/eval")
    num_fewshot: int | None = None  # None: the task's own (0, or 5 for the *_5shot tasks)
    limit: float | None = None  # documents per subject (a fraction if < 1); for smoke tests only
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = True  # only used with apply_chat_template
    system_instruction: str | None = None
    batch_size: int | str = 8
    device: str = "cpu"
    dtype: str = "auto"
    log_samples: bool = False
    seed: int = 1234
    trust_remote_code: bool = False  # MiniMind loads with the package's classes; other models may need it


@dataclass
class EvalOutcome:
    """What a run produced."""

    results: dict[str, Any]
    json_path: Path
    markdown_path: Path
    markdown: str


class _DropCustomDatasetNotice(logging.Filter):
    """lm-eval logs the same "Custom kwargs can be passed to `--metadata`" hint once per task (119 times)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


def build_task_manager(tasks: list[str], data_dir: str | None):
    """A ``TaskManager`` over our tasks (plus lm-eval's built-ins only if a requested name needs them)."""
    from lm_eval.tasks import TaskManager

    # minimind_original stands for C-Eval + CMMLU + the English group: check all their files
    expanded = [m for t in tasks for m in (DEFAULT_TASKS if t == ORIGINAL_GROUP else (t,))]
    subjects, foreign = expand(t for t in expanded if not is_english(t))
    check_data_dir(data_dir, subjects)  # fail before loading anything, naming the missing file
    check_english_data(data_dir, english_selected(tasks))
    unknown = [
        t for t in foreign if t.startswith(TASK_PREFIX)
    ]  # ours are all known: no need to index lm-eval's
    metadata = {"data_dir": str(data_dir)} if data_dir else None
    manager = None
    if not unknown:
        manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=bool(foreign), metadata=metadata)
        unknown = [t for t in foreign if t not in manager.all_tasks]
    if unknown:
        ours = ", ".join(DEFAULT_TASKS)
        raise TaskSelectionError(
            f"unknown task(s): {', '.join(unknown)}. Ours: {ours} (+ _5shot, _<category>, _<subject>; "
            "`minimind-hf eval tasks` lists them); any lm-eval task name also works."
        )
    return manager


def load_lm(settings: EvalSettings):
    """lm-eval's ``HFLM`` on the model folder (remote code only with ``settings.trust_remote_code``)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=settings.model,
        trust_remote_code=settings.trust_remote_code,
        batch_size=settings.batch_size,
        device=settings.device,
        dtype=settings.dtype,
    )


def evaluate(settings: EvalSettings, lm=None) -> dict[str, Any]:
    """Run ``simple_evaluate`` and return lm-eval's results dict (``lm``: an already built lm-eval LM)."""
    from lm_eval import simple_evaluate

    task_logger = logging.getLogger("lm_eval.api.task")
    notice = _DropCustomDatasetNotice()
    task_logger.addFilter(notice)
    try:
        manager = build_task_manager(settings.tasks, settings.data_dir)
        if lm is None:
            lm = load_lm(settings)
        results = simple_evaluate(
            model=lm,
            tasks=list(settings.tasks),
            num_fewshot=settings.num_fewshot,
            limit=settings.limit,
            task_manager=manager,
            apply_chat_template=settings.apply_chat_template,
            fewshot_as_multiturn=settings.fewshot_as_multiturn and settings.apply_chat_template,
            system_instruction=settings.system_instruction,
            log_samples=settings.log_samples,
            random_seed=settings.seed,
            numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed,
            fewshot_random_seed=settings.seed,
        )
    finally:
        task_logger.removeFilter(notice)
    if results is None:  # non-zero rank in a distributed run
        return {}
    # what `lm_eval --model hf --model_args pretrained=...` records (simple_evaluate leaves these None when
    # handed an LM object, as here)
    results["config"]["model"] = "hf"
    results["config"]["model_args"] = {
        "pretrained": settings.model,
        "trust_remote_code": settings.trust_remote_code,
        "dtype": settings.dtype,
    }
    results["config"]["batch_size"] = settings.batch_size
    results["config"]["device"] = str(getattr(lm, "device", settings.device))
    results.setdefault("model_name", settings.model)
    results["config"]["data_dir"] = settings.data_dir
    results["config"]["apply_chat_template"] = settings.apply_chat_template
    return results


def write_outputs(results: dict[str, Any], settings: EvalSettings) -> EvalOutcome:
    """Write ``results.json`` (samples apart, one jsonl per task) and ``results.md`` into
    ``settings.out_dir``."""
    from lm_eval.utils import handle_non_serializable

    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = results.pop("samples", None)
    json_path = out / "results.json"
    json_path.write_text(
        json.dumps(results, indent=2, ensure_ascii=False, default=handle_non_serializable), encoding="utf-8"
    )
    if samples:
        _write_samples(samples, json_path)
    title = {
        "model": settings.model,
        "limit": settings.limit,
        "chat template": settings.apply_chat_template,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    markdown = markdown_report(results, title)
    md_path = out / "results.md"
    md_path.write_text(markdown, encoding="utf-8")
    logger.info("wrote %s and %s", json_path, md_path)
    if samples:
        results["samples"] = samples
    return EvalOutcome(results=results, json_path=json_path, markdown_path=md_path, markdown=markdown)


def _write_samples(samples: dict[str, list], json_path: Path) -> None:
    """``samples_<task>_<date>.jsonl`` beside `json_path`, written by lm-eval's own `EvaluationTracker` (its
    file names and record format: ``arguments`` as ``gen_args_i.arg_j``, responses and target as strings),
    so lm-eval's tools and `datasets.load_dataset("json", ...)` read them as they read lm-eval's."""
    import copy

    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(json_path))
    tracker.date_id = (
        datetime.now().isoformat().replace(":", "-")
    )  # set by save_results_aggregated in lm-eval
    for task, rows in samples.items():
        tracker.save_results_samples(task, copy.deepcopy(rows))  # it rewrites the rows it is given


def run_lm_eval(settings: EvalSettings, lm=None) -> EvalOutcome:
    """Evaluate, then write lm-eval's JSON and the markdown tables next to it."""
    return write_outputs(evaluate(settings, lm=lm), settings)
