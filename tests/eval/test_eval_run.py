"""End to end: ``minimind-hf eval run`` on a tiny model folder over the real CSVs (all C-Eval subjects and
two CMMLU ones, ``--limit``), through lm-eval's ``HFLM`` with ``trust_remote_code=True``."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
import torch
from minimind_hf.eval.report import category_scores
from minimind_hf.eval.runner import EvalSettings, build_task_manager
from transformers import AutoModelForCausalLM, AutoTokenizer

from minimind_hf.cli import main

LIMIT = 2


@pytest.fixture(scope="module")
def run(model_dir, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-run")
    code = main(
        [
            "eval",
            "run",
            str(model_dir),
            "--tasks",
            "minimind_ceval",
            "minimind_cmmlu_5shot_agronomy,minimind_cmmlu_arts",
            "--data-dir",
            str(shared_data),
            "--limit",
            str(LIMIT),
            "--out",
            str(out),
            "--log-samples",
            "--batch-size",
            "16",
        ]
    )
    assert code == 0
    return out, json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_writes_lm_eval_json_and_markdown_tables(run):
    out, results = run
    assert results["n-shot"]["minimind_cmmlu_5shot_agronomy"] == 5
    assert results["n-shot"]["minimind_ceval_law"] == 0 and results["n-shot"]["minimind_cmmlu_arts"] == 0
    assert results["n-samples"]["minimind_ceval_law"] == {"original": 24, "effective": LIMIT}
    assert results["config"]["limit"] == LIMIT and results["config"]["data_dir"]
    # the fields `lm_eval --model hf` records (None when simple_evaluate is handed an LM object)
    config = results["config"]
    assert config["model"] == "hf" and config["model_args"]["pretrained"] == results["model_name"]
    assert config["batch_size"] is not None and config["device"] == "cpu"
    for name in ("minimind_ceval", "minimind_ceval_stem", "minimind_ceval_other"):
        assert 0.0 <= results["results"][name]["acc,none"] <= 1.0
    md = (out / "results.md").read_text(encoding="utf-8")
    assert (
        "### C-Eval (val), 0-shot" in md
        and "### CMMLU (test), 5-shot" in md
        and "### CMMLU (test), 0-shot" in md
    )
    assert "| **Average** | 52 | 104 |" in md
    assert f"limit={LIMIT}" in md
    for row in (
        "| STEM | 20 | 40 |",
        "| Social Science | 10 | 20 |",
        "| Humanities | 11 | 22 |",
        "| Other | 11 | 22 |",
    ):
        assert row in md
    assert _samples_file(out, "minimind_ceval_law").is_file()


def test_category_scores_equal_lm_evals_group_scores(run):
    """Our per-category tables (recomputed from subjects) agree with lm-eval's nested size-weighted groups."""
    _, results = run
    rows = {
        name.removeprefix("minimind_ceval_"): (
            results["n-samples"][name]["effective"],
            r["acc,none"],
            r["acc_norm,none"],
            0,
        )
        for name, r in results["results"].items()
        if name.startswith("minimind_ceval_") and name in results["n-samples"]
    }
    assert len(rows) == 52
    scores = category_scores(rows, "ceval")
    for category in ("stem", "social_science", "humanities", "other"):
        assert scores[category].mean("acc") == pytest.approx(
            results["results"][f"minimind_ceval_{category}"]["acc,none"]
        )
    assert scores["average"].mean("acc") == pytest.approx(results["results"]["minimind_ceval"]["acc,none"])
    assert scores["average"].mean("acc_norm") == pytest.approx(
        results["results"]["minimind_ceval"]["acc_norm,none"]
    )


def _samples_file(out, task: str):
    """lm-eval names sample files samples_<task>_<date>.jsonl."""
    (found,) = out.glob(f"samples_{task}_*.jsonl")
    return found


def test_scores_are_the_models_own_loglikelihoods(run, model_dir):
    """HFLM on transformers 5: each choice's score is log p(continuation | context) from our model."""
    out, _ = run
    samples = [
        json.loads(line)
        for line in _samples_file(out, "minimind_cmmlu_5shot_agronomy").open(encoding="utf-8")
    ]
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    sample = samples[0]
    # lm-eval's sample format: arguments as gen_args_i.arg_j, responses and target as strings
    arguments = [(a["arg_0"], a["arg_1"]) for a in sample["arguments"].values()]
    assert list(sample["arguments"]) == [f"gen_args_{i}" for i in range(4)]
    assert len(arguments) == 4 and "答案： " in arguments[0][0]  # few-shot answers in the prompt
    scores = []
    for i in range(4):
        context, continuation = arguments[i]
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
        scores.append(sum(logp[t - 1, whole[t]].item() for t in range(len(ctx), len(whole))))
    got = [float(r[0][0]) for r in sample["resps"]]
    assert got == pytest.approx(scores, abs=1e-3)
    assert sample["acc"] == float(max(range(4), key=lambda i: scores[i]) == int(sample["target"]))


def test_chat_template_wraps_the_prompt(model_dir, shared_data, tmp_path):
    code = main(
        [
            "eval",
            "run",
            str(model_dir),
            "--tasks",
            "minimind_ceval_5shot_logic",
            "--data-dir",
            str(shared_data),
            "--limit",
            "1",
            "--apply-chat-template",
            "--out",
            str(tmp_path),
            "--log-samples",
        ]
    )
    assert code == 0
    sample = json.loads(
        _samples_file(tmp_path, "minimind_ceval_5shot_logic").read_text(encoding="utf-8").splitlines()[0]
    )
    context = sample["arguments"]["gen_args_0"]["arg_0"]
    assert context.startswith("<|im_start|>system\n以下是中国关于逻辑学的单项选择题")
    assert (
        context.count("<|im_start|>user\n") == 6 and context.count("<|im_start|>assistant\n") == 6
    )  # 5 shots as turns
    # the question closes the last user turn; MiniMind's template opens the answer turn (with an empty
    # <think>)
    assert context.endswith("答案：<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert sample["arguments"]["gen_args_0"]["arg_1"] == "A"
    assert not math.isnan(
        json.loads((tmp_path / "results.json").read_text())["results"]["minimind_ceval_5shot_logic"][
            "acc,none"
        ]
    )


def test_bad_requests_fail_before_the_model_is_loaded(model_dir, tmp_path, shared_data, caplog):
    with pytest.raises(ValueError, match="in both minimind_cmmlu and minimind_cmmlu_china_specific"):
        build_task_manager(["minimind_cmmlu", "minimind_cmmlu_china_specific"], None)
    (tmp_path / "cmmlu").mkdir()
    code = main(["eval", "run", str(model_dir), "--tasks", "minimind_ceval_law", "--data-dir", str(tmp_path)])
    assert code == 2 and "no ceval/ folder" in caplog.text
    code = main(
        [
            "eval",
            "run",
            str(tmp_path / "no-model"),
            "--tasks",
            "minimind_ceval_law",
            "--data-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and "MODEL: no such folder" in caplog.text
    settings = EvalSettings(model="unused", tasks=["minimind_ceval_lawyer"])
    with pytest.raises(ValueError, match="unknown task"):
        build_task_manager(settings.tasks, str(shared_data))


def test_a_malformed_row_is_reported_with_file_and_line(model_dir, shared_data, tmp_path, caplog):
    for split in ("val", "dev"):
        (tmp_path / "ceval" / split).mkdir(parents=True)
        shutil.copy(shared_data / "ceval" / split / f"law_{split}.csv", tmp_path / "ceval" / split)
    path = tmp_path / "ceval" / "val" / "law_val.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    rows[2][-1] = "E"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    code = main(
        [
            "eval",
            "run",
            str(model_dir),
            "--tasks",
            "minimind_ceval_law",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2 and "law_val.csv:3: answer='E', expected one of A, B, C, D" in caplog.text
