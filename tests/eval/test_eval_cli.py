"""``add_eval_commands`` wired into a main parser the way ``minimind-hf`` does it: ``eval run``, ``eval ppl``,
``eval tools`` and ``eval tasks`` are subcommands."""

from __future__ import annotations

import argparse

import pytest
from minimind_hf.eval import cli


@pytest.fixture
def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="minimind-hf")
    main.add_argument("-v", "--verbose", action="store_true")
    sub = main.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("quickstart")
    cli.add_eval_commands(sub)
    return main


def test_run_parses_its_options_and_defaults(parser):
    args = parser.parse_args(["eval", "run", "runs/model", "--limit", "5", "--tasks", "minimind_ceval_law"])
    assert args.func is cli._run and args.model == "runs/model" and args.limit == 5.0
    assert args.tasks == ["minimind_ceval_law"] and args.num_fewshot is None and not args.apply_chat_template
    defaults = parser.parse_args(["eval", "run", "m"])
    assert defaults.tasks == ["minimind_ceval", "minimind_cmmlu"] and defaults.out == "runs/eval"


def test_a_model_without_a_command_is_refused_naming_the_commands(parser, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "runs/model"])
    err = capsys.readouterr().err
    assert "invalid choice: 'runs/model'" in err and "run" in err and "ppl" in err


def test_ppl_and_tasks_subcommands(parser):
    args = parser.parse_args(["-v", "eval", "ppl", "m", "--data", "a.jsonl", "b.txt", "--max-length", "256"])
    assert (
        args.func is cli._ppl
        and args.data == ["a.jsonl", "b.txt"]
        and args.max_length == 256
        and args.verbose
    )
    assert parser.parse_args(["eval", "tasks"]).func is cli._list_tasks
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "ppl", "m"])  # --data is required
    with pytest.raises(SystemExit):
        parser.parse_args(["eval"])  # a command is required


def test_tasks_lists_our_names(capsys):
    from minimind_hf.cli import main

    assert main(["eval", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "minimind_cmmlu_china_specific" in out and "minimind_ceval_5shot_accountant" in out
    assert "subject tasks (238)" in out


def test_lm_eval_spellings_of_the_flags_are_accepted():
    """lm-eval users type --num_fewshot / --apply_chat_template / --batch_size: same options, both
    spellings."""
    from minimind_hf.cli import build_parser

    parse = build_parser().parse_args
    hyphen = parse(["eval", "run", "m", "--num-fewshot", "5", "--apply-chat-template", "--batch-size", "4"])
    under = parse(["eval", "run", "m", "--num_fewshot", "5", "--apply_chat_template", "--batch_size", "4"])
    assert vars(hyphen) == vars(under) and under.num_fewshot == 5 and under.apply_chat_template
    assert parse(["eval", "ppl", "m", "--data", "x.jsonl", "--max_length", "9"]).max_length == 9
