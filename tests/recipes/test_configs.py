"""Every shipped recipe YAML parses against its recipe's dataclasses, and its native translation validates.

(torchtune `tests/recipes/test_configs.py`, litgpt `tests/test_config_hub.py`.) No training: ``--dry_run``.
GPU configs say ``bf16: true``; on this CPU they are parsed with ``--bf16 false``.
"""

from __future__ import annotations

import importlib
import json

import pytest
import yaml
from _recipe_helpers import CONFIGS, RECIPES, STAGE_DATA

NATIVE_ONLY, TRL_ONLY = {"ppo"}, {"rloo"}
YAMLS = sorted(CONFIGS.glob("*/*.yaml"))


def _recipe(stage: str):
    return importlib.import_module(f"minimind_hf.recipes.{stage}")


def test_every_stage_has_a_config_per_preset():
    presets = {p.name for p in CONFIGS.iterdir() if p.is_dir()}
    assert presets == {"tiny", "minimind3", "minimind3-moe"}
    stages = {p.stem for p in RECIPES.glob("*.py")} - {
        "__init__",
        "common",
        "native_bridge",
        "rl_shared",
        "cli",
    }
    assert stages == set(STAGE_DATA), stages
    for preset in presets:
        assert {p.stem for p in (CONFIGS / preset).glob("*.yaml")} == stages, preset


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_yaml_parses_and_starts_with_its_command(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert (
        first.startswith("# ")
        and f"recipes/{path.stem}.py" in first
        and str(path.relative_to(RECIPES.parent)) in first
    ), f"{path}: the first line must be the command that runs it, got {first!r}"
    recipe_args, training_args, model_args, *_ = _recipe(path.stem).parse_args(
        ["--config", str(path), "--bf16", "false"]
    )
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert recipe_args.data, f"{path}: no data"
    assert training_args.learning_rate == pytest.approx(float(raw["learning_rate"]))
    assert training_args.output_dir == raw["output_dir"]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_native_translation_validates(path, tiny_model_dir, recipe_env, monkeypatch, capsys):
    """The YAML through ``--backend native --dry_run`` (data and model swapped for local stand-ins) yields a
    valid native stage config whose shared keys carry the YAML's values."""
    stage = path.stem
    if stage in TRL_ONLY:
        pytest.skip(f"{stage} has no native backend (tested in its own file)")
    monkeypatch.setenv("MINIMIND_HF_CACHE", recipe_env["MINIMIND_HF_CACHE"])
    module = _recipe(stage)
    args = [
        "--config",
        str(path),
        "--bf16",
        "false",
        "--backend",
        "native",
        "--dry_run",
        "true",
        "--data",
        STAGE_DATA[stage],
        "--model_name_or_path",
        str(tiny_model_dir),
    ]
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("teacher_model_name_or_path", "teacher", "ref_model", "reward_model"):
        if raw.get(key):
            args += [f"--{key}", str(tiny_model_dir)]
    module.main(*module.parse_args(args))
    shown = json.loads(capsys.readouterr().out)
    assert shown["backend"] == "native" and shown["stage"] == stage
    cfg = shown["config"]
    assert cfg["learning_rate"] == pytest.approx(float(raw["learning_rate"]))
    assert cfg["output_dir"] == raw["output_dir"]
    assert cfg["batch_size"] >= 1 and cfg["model"] == str(tiny_model_dir)
    # the original's RL settings reach the native config under their own names
    for key in (
        "thinking_ratio",
        "mini_batch_size",
        "early_stop_kl",
        "add_system_ratio",
        "empty_think_ratio",
    ):
        if key in raw:
            assert cfg[key] == raw[key], key
