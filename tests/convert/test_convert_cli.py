"""The `convert` command line: registration on a parent CLI, `python -m minimind_hf.convert`, exit codes."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch
from minimind_hf.convert import ConversionError
from minimind_hf.convert.cli import add_convert_commands

from minimind_hf import cli

SUBCOMMANDS = ["to-qwen3", "from-qwen3", "from-pth", "to-pth", "merge-lora", "to-gguf", "to-ollama"]


def main(argv: list[str]) -> int:
    """`minimind-hf convert ARGV...`."""
    return cli.main(["convert", *argv])


def test_registers_on_a_parent_cli():
    parser = argparse.ArgumentParser(prog="minimind-hf")
    sub = parser.add_subparsers(dest="command", required=True)
    add_convert_commands(sub)
    args = parser.parse_args(["convert", "to-gguf", "src", "out.gguf", "--outtype", "q8_0", "--force"])
    assert args.func is not None and args.outtype == "q8_0" and args.force
    args = parser.parse_args(
        ["convert", "from-pth", "x.pth", "out", "--preset", "minimind3", "--tokenizer", "tok"]
    )
    assert args.preset == "minimind3" and args.dtype == "auto"
    with pytest.raises(SystemExit):  # --preset and --config are exclusive
        parser.parse_args(["convert", "from-pth", "x.pth", "out", "--preset", "tiny", "--config", "c.json"])
    # a .pth needs one of them and --tokenizer (a folder the original saved has its own): said when it runs
    for missing, argv in (
        ("--preset or --config", ["--tokenizer", "tok"]),
        ("--tokenizer", ["--preset", "tiny"]),
    ):
        args = parser.parse_args(["convert", "from-pth", "x.pth", "out", *argv])
        with pytest.raises(ConversionError, match=f"a .pth checkpoint needs {missing}"):
            args.convert_func(args)
    help_text = sub.choices["convert"].format_help()
    for name in SUBCOMMANDS:
        assert name in help_text


@pytest.mark.slow
def test_python_dash_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minimind_hf.convert", "--help"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    for name in SUBCOMMANDS:
        assert name in proc.stdout


def test_round_trip_through_the_cli(trained, tmp_path, capsys):
    assert main(["to-qwen3", str(trained["dense"]), str(tmp_path / "q")]) == 0
    assert "vllm serve" in capsys.readouterr().out
    assert main(["to-pth", str(tmp_path / "q"), str(tmp_path / "m.pth")]) == 0
    sd = torch.load(tmp_path / "m.pth", weights_only=True)
    assert sd["lm_head.weight"].dtype == torch.float16
    assert (
        main(
            [
                "from-pth",
                str(tmp_path / "m.pth"),
                str(tmp_path / "back"),
                "--preset",
                "tiny",
                "--vocab-size",
                "1024",
                "--tokenizer",
                str(trained["dense"]),
            ]
        )
        == 0
    )
    assert (tmp_path / "back" / "tokenizer.json").is_file()


def test_user_errors_exit_2_with_one_message(trained, tmp_path, caplog):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    assert main(["to-qwen3", str(trained["dense"]), str(tmp_path / "out")]) == 2
    assert "already exists" in caplog.text and "--force" in caplog.text
    caplog.clear()
    assert (
        main(
            [
                "from-pth",
                str(tmp_path / "missing.pth"),
                str(tmp_path / "o2"),
                "--preset",
                "tiny",
                "--tokenizer",
                str(trained["dense"]),
            ]
        )
        == 2
    )
    assert "no such file" in caplog.text
