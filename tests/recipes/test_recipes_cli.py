"""`minimind-hf recipes ls|cp` and `minimind-hf train --help`: the shipped configs are reachable after
install."""

from __future__ import annotations

import yaml

from minimind_hf.cli import main


def test_ls_lists_every_shipped_config(capsys):
    assert main(["recipes", "ls"]) == 0
    out = capsys.readouterr().out
    for preset in ("tiny", "minimind3", "minimind3-moe"):
        assert preset in out
    assert "sft.yaml" in out and "grpo.yaml" in out


def test_cp_copies_and_never_overwrites_without_force(tmp_path, capsys):
    dest = tmp_path / "my_sft.yaml"
    assert main(["recipes", "cp", "sft", "tiny", str(dest)]) == 0
    assert yaml.safe_load(dest.read_text())["output_dir"] == "runs/tiny/sft"
    dest.write_text("# my edits\n")
    assert main(["recipes", "cp", "sft", str(dest)]) == 2
    assert "--force" in capsys.readouterr().err and dest.read_text() == "# my edits\n"
    assert main(["recipes", "cp", "sft", str(dest), "--force"]) == 0
    assert (
        main(["recipes", "cp", "dpo", "minimind3", str(tmp_path)]) == 0 and (tmp_path / "dpo.yaml").is_file()
    )
    assert main(["recipes", "cp", "sft", "nosuchpreset", str(tmp_path / "x.yaml")]) == 2


def test_train_help_mentions_config_and_lists_the_stages(capsys):
    try:
        main(["train", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and all(stage in out for stage in ("pretrain", "sft", "grpo", "ppo", "rloo"))
