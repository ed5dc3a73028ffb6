"""`tokenizer train` command: trains, saves a folder AutoTokenizer loads, fails cleanly on bad input."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from minimind_hf.cli import main
from minimind_hf.tokenizer.cli import add_tokenizer_commands, run

REPO_ROOT = Path(__file__).resolve().parents[2]


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in lines) + "\n", encoding="utf-8"
    )
    return path


def test_parser_registration():
    parser = argparse.ArgumentParser()
    add_tokenizer_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tokenizer", "train", "--data", "a.jsonl", "b.txt", "--out", "o"])
    assert args.data == ["a.jsonl", "b.txt"] and args.out == "o" and args.vocab_size == 6400
    assert args.func is run
    args = parser.parse_args(["tokenizer", "train", "--data", "a.jsonl", "--out", "o", "--vocab-size", "512"])
    assert args.vocab_size == 512


def test_train_and_save(tmp_path, corpus, caplog):
    data = _write_jsonl(tmp_path / "pretrain.jsonl", corpus[:200])
    out = tmp_path / "tok"
    caplog.set_level("INFO")
    code = main(
        ["tokenizer", "train", "--data", str(data), "--out", str(out), "--vocab-size", "400", "--no-progress"]
    )
    assert code == 0
    assert "vocab size 400" in caplog.text and "sample" in caplog.text
    loaded = AutoTokenizer.from_pretrained(out)
    assert len(loaded) == 400
    assert loaded.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]) == [
        0,
        1,
        2,
        25,
    ]
    assert (
        loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
        == "<|im_start|>user\nhi<|im_end|>\n"
    )


def test_bad_vocab_size_returns_2(tmp_path, corpus, caplog):
    data = _write_jsonl(tmp_path / "d.jsonl", corpus[:5])
    code = main(
        ["tokenizer", "train", "--data", str(data), "--out", str(tmp_path / "o"), "--vocab-size", "10",
         "--no-progress"]
    )  # fmt: skip
    assert code == 2 and "at least 292" in caplog.text


@pytest.mark.slow
def test_missing_file_exit_code_and_message(tmp_path, corpus):
    data = _write_jsonl(tmp_path / "ok.jsonl", corpus[:5])
    missing = tmp_path / "does_not_exist.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "minimind_hf.cli", "tokenizer", "train", "--data", str(data), str(missing),
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_data_that_is_not_a_source_exits_nonzero(tmp_path):
    """`tokenizer train --data missing.parquet` once trained a tokenizer on the text 'missing.parquet'."""
    for bad in ("missing.parquet", "no_such_folder"):
        code = main(
            [
                "tokenizer",
                "train",
                "--data",
                str(tmp_path / bad),
                "--out",
                str(tmp_path / "o"),
                "--no-progress",
            ]
        )
        assert code == 2 and not (tmp_path / "o").exists(), bad
