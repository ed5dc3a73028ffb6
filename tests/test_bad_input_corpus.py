"""The bad-input corpus (issue 16): every hostile data file, config case and command-line argument, run
through `minimind-hf` itself, ends in a named error (file, line and field where there is one), a counted skip
where skipping was asked for, or a normal run where the input is in fact fine. Never a traceback, never the
catch-all "unexpected" line (a failure class nobody has named yet), and a non-zero exit whenever nothing
useful was done.

The data files and config cases are the shared `bad_inputs/` corpus (its README says what each one is); the
server's hostile requests are `tests/serve/test_server.py`'s (HTTP 4xx naming the field, never a 500).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from _shared import shared_data_dir

from minimind_hf.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "configs" / "tiny"
OK = None  # the expectation of a case that is in fact fine: exit 0


@pytest.fixture(scope="module")
def bad_inputs(shared_data) -> Path:
    return shared_data / "bad_inputs"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny pretrained folder (model + tokenizer) for the stages that start from one."""
    out = tmp_path_factory.mktemp("corpus") / "pt"
    rc = main(
        ["train", "pretrain", "--config", str(TINY / "pretrain.yaml"), "--backend", "native",
         "--data", "demo:pretrain:400", "--vocab_size", "400", "--max_steps", "2", "--output_dir", str(out),
         "--eval_strategy", "no", "--save_strategy", "no", "--torch_compile", "false"]
    )  # fmt: skip
    assert rc == 0 and (out / "config.json").is_file()
    return out


def run_cli(argv: list[str], capfd, caplog) -> tuple[int, str]:
    """(exit status, everything written to stderr and the log) of ``minimind-hf ARGV`` in this process."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's usage errors
            status = e.code if isinstance(e.code, int) else 1
    return status, capfd.readouterr().err + caplog.text


def check(argv: list[str], expect: str | None, capfd, caplog) -> str:
    status, err = run_cli(argv, capfd, caplog)
    assert "Traceback" not in err, err[-3000:]
    assert "error: unexpected" not in err, err[-3000:]
    if expect is OK:
        assert status == 0, err[-3000:]
    else:
        assert status != 0, f"exit 0 for a bad input; expected /{expect}/\n{err[-3000:]}"
        assert re.search(expect, err), f"expected /{expect}/ in:\n{err[-3000:]}"
    return err


# ----------------------------------------------------------------------------------------------- data files
STAGE = {"pt": "pretrain", "sft": "sft", "dpo": "dpo", "rl": "grpo"}
# files that are unusual but fine: a BOM, CRLF line ends, a JSON array, long rows (truncated or split),
# a list ground truth (any of its values is right)
FINE = {
    "pt_array.json", "pt_bom.jsonl", "pt_crlf.jsonl", "pt_midbom.jsonl", "pt_long.jsonl",
    "sft_array.json", "sft_bom.jsonl", "sft_crlf.jsonl", "sft_midbom.jsonl", "sft_longuser.jsonl",
    "dpo_array.json", "dpo_bom.jsonl", "dpo_crlf.jsonl", "dpo_midbom.jsonl", "dpo_long.jsonl",
    "rl_array.json", "rl_bom.jsonl", "rl_crlf.jsonl", "rl_midbom.jsonl", "rl_long.jsonl", "rl_gt_list.jsonl",
}  # fmt: skip
# errors about the whole file (or about a stage's needs), not one record: the message names the file or the
# need
WHOLE_FILE = {
    "empty": r"no records found",
    "blank": r"no records found",
    "corrupt.jsonl.gz": r"corrupt gzip stream",
    "trunc.jsonl.gz": r"truncated or corrupt gzip stream after line \d+",
    "notgz.jsonl.gz": r"not a gzip file.*rename it",
    "corrupt.parquet": r"not a readable parquet file",
    "alllong": r"no conversation has an assistant token within max_length",
    "nogt": r"no ground truth .*accuracy reward needs one",
}
# what each record-level case is refused for (the field or the reason), beyond its file:line
RECORD = {
    "malformed": r"malformed JSON", "missing": r"missing", "content_int": r"content must be a string",
    "conv_str": r"expected a list of messages", "int": r"text must be a string",
    "inttext": r"text must be a string",
    "role": r"unknown role", "noasst": r"assistant", "endsasst": r"must end with a user or tool turn",
    "latin1": r"not valid UTF-8", "utf16": r"not valid UTF-8", "nullbyte": r"malformed JSON",
    "nul_json": r"must be a JSON object", "toplist": r"must be a JSON object", "hugeint": r"malformed JSON",
    "deep": r"nested too deeply", "lonesurrogate": r"lone surrogate", "inject": r"control token",
    "same": r"chosen and rejected are identical", "ws_asst": r"assistant turn is empty",
    "missing_content": r"content", "wrongcols": r"missing field 'text'",
}  # fmt: skip


def _data_cases(folder: Path) -> list:
    cases = []
    for path in sorted(folder.iterdir()):
        if path.name == "README.md":
            continue
        if path.is_dir():  # a folder given as data: named, with what it lacks
            cases.append(pytest.param(("sft", path.name, rf"{path.name}: directory has no"), id=path.name))
            continue
        prefix, _, what = path.name.partition("_")
        key = what if what in WHOLE_FILE else what.split(".")[0]
        if path.name in FINE:
            expect = OK
        elif key in ("alllong", "nogt"):  # what the stage needs, not the file's form
            expect = WHOLE_FILE[key]
        elif key in WHOLE_FILE:
            expect = re.escape(path.name) + r".*" + WHOLE_FILE[key]
        else:
            expect = re.escape(path.name) + r":(row )?\d+: .*" + RECORD[key]
        cases.append(pytest.param((STAGE[prefix], path.name, expect), id=path.name))
    return cases


def _stage_argv(stage: str, model: Path, out: Path) -> list:
    argv = ["train", stage, "--config", TINY / f"{stage}.yaml", "--backend", "native", "--output_dir", out,
            "--model_name_or_path", model, "--max_steps", "1", "--per_device_train_batch_size", "2",
            "--eval_strategy", "no", "--save_strategy", "no", "--torch_compile", "false"]  # fmt: skip
    if stage == "grpo":
        argv += ["--num_generations", "2", "--max_completion_length", "4"]
    return argv


def pytest_generate_tests(metafunc):
    if "data_case" in metafunc.fixturenames:
        folder = shared_data_dir()
        cases = _data_cases(folder / "bad_inputs") if folder else []
        metafunc.parametrize(
            "data_case", cases or [pytest.param(None, marks=pytest.mark.skip("no shared data"))]
        )


def test_data_file(data_case, bad_inputs, model, tmp_path, capfd, caplog):
    stage, name, expect = data_case
    argv = _stage_argv(stage, model, tmp_path / "out") + ["--data", bad_inputs / name]
    check(argv, expect, capfd, caplog)


@pytest.mark.parametrize(
    "stage, name",
    [("pretrain", "pt_malformed.jsonl"), ("sft", "sft_lonesurrogate.jsonl"), ("dpo", "dpo_role.jsonl")],
)
def test_a_bad_record_is_a_counted_skip_when_asked(stage, name, bad_inputs, model, tmp_path, capfd, caplog):
    argv = _stage_argv(stage, model, tmp_path / "out") + [
        "--data",
        bad_inputs / name,
        "--skip_invalid",
        "true",
    ]
    err = check(argv, OK, capfd, caplog)
    assert re.search(r"skipped 1 of \d+", err), err[-2000:]


# --------------------------------------------------------------------------------------------- config cases
def _pretrain(*extra) -> list:
    return ["train", "pretrain", "--config", TINY / "pretrain.yaml", "--backend", "native",
            "--data", "demo:pretrain:300", "--max_steps", "2", "--eval_strategy", "no",
            "--save_strategy", "no", "--torch_compile", "false", *extra]  # fmt: skip


# (id, extra arguments with {tmp} / {model} placeholders, expected error or OK); the shared README's intent
# in today's recipe vocabulary
CONFIG_CASES = [
    ("unknown_key", ["--learning_rat", "1e-3"], r"not used by the HfArgumentParser: \['--learning_rat'"),
    ("lr_abc", ["--learning_rate", "abc"], r"--learning_rate.*invalid float value: 'abc'"),
    ("neg_steps", ["--max_steps", "-5"], r"max_steps must be a positive step count, or -1"),
    ("bs0", ["--per_device_train_batch_size", "0"], r"per_device_train_batch_size must be > 0"),
    (
        "multi",
        ["--per_device_train_batch_size", "0", "--max_steps", "-7", "--preset", "nope"],
        r"(?s)(?=.*per_device_train_batch_size must be > 0)(?=.*max_steps must be a positive)"
        r"(?=.*preset: unknown)",
    ),
    ("preset_nope", ["--preset", "nope"], r"preset: unknown 'nope'; valid: "),
    ("outdir_file", ["--output_dir", "{tmp}/afile"], r"output_dir: .* is a file"),
    ("outdir_under_file", ["--output_dir", "{tmp}/afile/sub"], r"Not a directory|not a folder|is a file"),
    ("dash_key", ["--max-steps", "3"], OK),
    (
        "colon_typo",
        ["--output_dir", "{tmp}/o", "max_steps:3"],
        r"not used by the HfArgumentParser: \['max_steps:3'\]",
    ),
    ("space_val", ["--max_steps", " 3"], OK),
    ("lr_1e3", ["--learning_rate", "1e-3"], OK),
    ("steps_1e3", ["--max_steps", "1e3"], r"--max_steps.*invalid int value: '1e3'"),
    ("steps_float", ["--max_steps", "2.5"], r"--max_steps.*invalid int value: '2.5'"),
    ("bool_str", ["--packing", "maybe"], r"--packing: Truthy value expected"),
    ("resume_bogus", ["--resume_from_checkpoint", "{tmp}/nope"], r"resume"),
    (
        "override_typo_nested",
        ["--model_overrides", '{"hidden_sise": 128}'],
        r"model_overrides: 'hidden_sise' is not a MiniMindConfig field \(did you mean 'hidden_size'\?\)",
    ),
    (
        "override_badtype_nested",
        ["--model_overrides", '{"hidden_size": "abc"}'],
        r"model_overrides: .*hidden_size",
    ),
    (
        "override_heads",
        ["--model_overrides", '{"num_attention_heads": 3}'],
        r"model_overrides: .*num_attention_heads \(3\)",
    ),
    (
        "seq_gt_maxpos",
        ["--model_overrides", '{"max_position_embeddings": 32}', "--max_length", "128"],
        r"max_length 128 exceeds max_position_embeddings 32",
    ),
    ("bf16_cpu_trl_args", ["--bf16", "true", "--use_cpu", "false"], r"bf16"),
    ("flash_cpu", ["--attn_implementation", "flash_attention_2"], r"flash_attention_2.*needs a CUDA GPU"),
    ("attn_bogus", ["--attn_implementation", "bogus"], r"attn_implementation: unknown 'bogus'; valid: eager"),
    ("lr_inf", ["--learning_rate", "inf"], r"learning_rate must be a finite number"),
    ("lr_nan", ["--learning_rate", "nan"], r"learning_rate must be a finite number"),
    ("beta2_bad", ["--adam_beta2", "1.5"], r"adam_beta2 must be in \[0, 1\)"),
    (
        "eval_every_gt",
        ["--eval_strategy", "steps", "--eval_steps", "1", "--eval_ratio", "0.99"],
        r"fewer than one optimizer step needs",
    ),
    ("eval_ratio_1", ["--eval_ratio", "1.0"], r"eval_ratio must be in \[0, 1\)"),
    (
        "vocab_small",
        ["--model_overrides", '{"vocab_size": 100}'],
        r"the tokenizer has \d+ tokens but the model only 100",
    ),
    ("tokenizer_file", ["--tokenizer", "{model}/config.json"], r"tokenizer: no such folder"),
    ("tokenizer_emptydir", ["--tokenizer", "{bad}/emptytok"], r"holds no tokenizer"),
    ("data_str", ["--data", "some words"], r"'some words' is not an existing local file or folder"),
    ("data_missing", ["--data", "{tmp}/missing.jsonl"], r"missing.jsonl"),
    ("threads_neg", ["--num_threads", "-2"], r"num_threads must be >= 0"),
    ("report_bogus", ["--report_to", "bogus"], r"report_to"),
    ("num_proc_neg", ["--dataset_num_proc", "-3"], r"dataset_num_proc must be >= 1"),
    ("min_lr_2", ["--lr_scheduler_kwargs", '{"min_lr_rate": 2}'], r"min_lr"),
    ("seed_str", ["--seed", "abc"], r"--seed.*invalid int value"),
    ("config_dir", ["--config", "{tmp}"], r"(?s)--config.*is a folder, not a YAML file"),
    ("config_missing", ["--config", "{tmp}/nope.yaml"], r"no such file .*nope.yaml"),
    ("config_list", ["--config", "{tmp}/cfg_list.yaml"], r"(?s)cfg_list.yaml.*expected a mapping of keys"),
    (
        "config_badyaml",
        ["--config", "{tmp}/cfg_bad.yaml"],
        r"(?s)cfg_bad.yaml.*not valid YAML: line 2, column 1",
    ),
    ("config_recipe_yaml", [], OK),
]


@pytest.mark.parametrize("extra, expect", [pytest.param(e, x, id=i) for i, e, x in CONFIG_CASES])
def test_config_case(extra, expect, model, bad_inputs, tmp_path, capfd, caplog):
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    (tmp_path / "cfg_list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    (tmp_path / "cfg_bad.yaml").write_text("learning_rate: [1,\n", encoding="utf-8")
    fill = {"{tmp}": str(tmp_path), "{model}": str(model), "{bad}": str(bad_inputs)}
    extra = [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in extra]
    argv = _pretrain("--tokenizer", model, "--output_dir", tmp_path / "out", *extra)
    if "--config" in extra:  # the case's own --config instead of the tiny recipe
        del argv[argv.index("--config") : argv.index("--config") + 2]
    check(argv, expect, capfd, caplog)


STAGE_CASES = [
    (
        "sft_model_is_file",
        "sft",
        ["--model_name_or_path", "{model}/config.json", "--data", "demo:sft:40"],
        r"model_name_or_path: no such folder",
    ),
    (
        "sft_model_emptydir",
        "sft",
        ["--model_name_or_path", "{bad}/emptydir", "--data", "demo:sft:40"],
        r"has no config.json",
    ),
    ("grpo_bad_reward", "grpo", ["--rewards", "acuracy"], r"rewards: unknown \['acuracy'\]; valid:"),
    ("grpo_gen1", "grpo", ["--num_generations", "1"], r"at least 2 generations per prompt"),
    (
        "grpo_temp_neg",
        "grpo",
        ["--temperature", "-1", "--top_p", "5"],
        r"(?s)temperature must be > 0.*top_p must be in",
    ),
    ("dpo_maxprompt", "dpo", ["--data", "demo:dpo:40", "--max_prompt_length", "2000"], r"max_prompt_length"),
]


@pytest.mark.parametrize("stage, extra, expect", [pytest.param(s, e, x, id=i) for i, s, e, x in STAGE_CASES])
def test_stage_config_case(stage, extra, expect, model, bad_inputs, tmp_path, capfd, caplog):
    fill = {"{model}": str(model), "{bad}": str(bad_inputs)}
    extra = [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in extra]
    argv = _stage_argv(stage, model, tmp_path / "out")
    if stage == "grpo":
        argv += ["--data", "demo:rl:20"]
    check(argv + extra, expect, capfd, caplog)


# ------------------------------------------------------------------------------------ other commands' inputs
OTHER_CASES = [
    ("stage_typo", ["train", "pretrian"], r"invalid choice: 'pretrian'"),
    ("tokenizer_missing_parquet",
     ["tokenizer", "train", "--data", "{tmp}/missing.parquet", "--out", "{tmp}/tok"], r"missing.parquet"),
    ("tokenizer_txtdir", ["tokenizer", "train", "--data", "{bad}/txtdir", "--out", "{tmp}/tok"], r"txtdir"),
    ("tokenizer_gz", ["tokenizer", "train", "--data", "{bad}/pt_notgz.jsonl.gz", "--out", "{tmp}/tok"],
     r"not a gzip file"),
    ("eval_model_missing", ["eval", "run", "{tmp}/nomodel", "--data-dir", "{tmp}"], r"MODEL: no such folder"),
    ("eval_ppl_model_missing", ["eval", "ppl", "{tmp}/nomodel", "--data", "{tmp}/ok.jsonl"],
     r"MODEL: no such folder"),
    ("eval_ppl_bad_data", ["eval", "ppl", "{model}", "--data", "{bad}/pt_malformed.jsonl"],
     r"pt_malformed.jsonl:3: malformed JSON"),
    ("eval_gbk_csv",
     ["eval", "run", "{model}", "--data-dir", "{tmp}/ev", "--tasks", "minimind_ceval_accountant"],
     r"accountant_val.csv: not UTF-8 text.*iconv"),
    ("eval_data_dir_missing", ["eval", "run", "{model}", "--data-dir", "{tmp}/nope"], r"not a folder"),
    ("convert_pth_garbage", ["convert", "from-pth", "{tmp}/bad.pth", "{tmp}/cv", "--tokenizer", "{model}",
                             "--preset", "tiny"], r"bad.pth: not a loadable weights-only state dict"),
    ("convert_pth_bad_config", ["convert", "from-pth", "{tmp}/bad.pth", "{tmp}/cv", "--tokenizer", "{model}",
                                "--config", "{tmp}/bad.json"], r"--config .*bad.json: not a JSON config"),
    ("convert_not_a_model", ["convert", "to-gguf", "{bad}/emptydir", "{tmp}/m.gguf"],
     r"emptydir is not a model folder"),
    ("convert_abbreviation", ["convert", "to-gguf", "{model}", "{tmp}/m.gguf", "--out", "x"],
     r"unrecognized arguments: --out"),
    ("merge_no_adapter", ["convert", "merge-lora", "{model}", "{tmp}/nope", "{tmp}/m"],
     r"no such file or folder"),
    ("merge_not_adapter", ["convert", "merge-lora", "{model}", "{model}", "{tmp}/m"],
     r"not a known LoRA adapter"),
    ("chat_no_model", ["chat", "{tmp}/nomodel"], r"is not a model folder"),
    ("serve_empty_folder", ["serve", "{bad}/emptydir"], r"is not a model folder"),
]  # fmt: skip


@pytest.mark.parametrize("argv, expect", [pytest.param(a, x, id=i) for i, a, x in OTHER_CASES])
def test_command_case(argv, expect, model, bad_inputs, shared_data, tmp_path, capfd, caplog):
    (tmp_path / "ok.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    (tmp_path / "bad.pth").write_bytes(b"not a pickle")
    (tmp_path / "bad.json").write_text("{bad json", encoding="utf-8")
    gbk = tmp_path / "ev" / "ceval"
    for split in ("val", "dev"):
        (gbk / split).mkdir(parents=True)
        text = (shared_data / "ceval" / split / f"accountant_{split}.csv").read_text(encoding="utf-8")
        (gbk / split / f"accountant_{split}.csv").write_bytes(text.encode("gbk", errors="replace"))
    fill = {"{tmp}": str(tmp_path), "{model}": str(model), "{bad}": str(bad_inputs)}
    argv = [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in argv]
    check(argv, expect, capfd, caplog)


def test_rerunning_a_finished_run_with_other_data_names_resume(model, tmp_path, capfd, caplog):
    """The issue's own 'done when': the same output_dir, other data -> non-zero, naming `resume`."""
    out = tmp_path / "run"
    first = _pretrain(
        "--tokenizer", model, "--output_dir", out, "--save_strategy", "steps", "--save_steps", "1"
    )
    check(first, OK, capfd, caplog)
    again = [a if a != "demo:pretrain:300" else "demo:pretrain:200" for a in first]
    err = check(again, r"different run \(data", capfd, caplog)
    assert "resume_from_checkpoint: false" in err
    # trl's Trainer would start over there, replacing the checkpoints: a choice, not a default
    trl = [*again[:5], "trl", *again[6:]]
    check(trl, r"holds native checkpoints .*resume_from_checkpoint: true to continue", capfd, caplog)
