"""One vocabulary: every field of every dataclass a recipe parses is honoured by the native backend or
refused.

For each native stage, every field of the stage's trl config, trl's ModelConfig, our RecipeArguments and the
stage's extra arguments that the stage's table (`recipes/native_bridge.py`) does not read is set away from its
default; the translation must then fail naming every one of them. A new trl release that adds a field is
thus refused until a table row reads it. The same holds for our native-only keys under ``backend: trl``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys

import pytest
from _recipe_helpers import CONFIGS, REPO, STAGE_DATA
from minimind_hf.recipes import native_bridge as nb
from minimind_hf.recipes.common import RecipeError


class _Unlike:
    """A value equal to nothing: whatever a field's default, this is "set away from it"."""

    def __eq__(self, other):
        return False

    __hash__ = object.__hash__

    def __repr__(self):
        return "<set>"


def _parse(stage, tiny_model_dir, monkeypatch, recipe_env, *extra):
    monkeypatch.setenv("MINIMIND_HF_CACHE", recipe_env["MINIMIND_HF_CACHE"])
    module = importlib.import_module(f"minimind_hf.recipes.{stage}")
    argv = ["--config", str(CONFIGS / "tiny" / f"{stage}.yaml"), "--backend", "native"]
    argv += ["--data", STAGE_DATA[stage], "--model_name_or_path", str(tiny_model_dir), *extra]
    if stage == "distill":
        argv += ["--teacher_model_name_or_path", str(tiny_model_dir)]
    return list(module.parse_args(argv))


def _init_fields(obj):
    return [f.name for f in dataclasses.fields(obj) if f.init]


@pytest.mark.parametrize("stage", sorted(nb.TABLES))
def test_every_unread_field_is_refused_by_name(stage, tiny_model_dir, monkeypatch, recipe_env):
    parts = _parse(stage, tiny_model_dir, monkeypatch, recipe_env)
    nb.native_config(stage, *parts)  # the shipped YAML itself translates with no refusal
    keep = nb.honoured(stage)
    unread = {}
    for part in parts:
        for name in _init_fields(part):
            if name not in keep:
                setattr(part, name, _Unlike())
                unread[name] = type(part).__name__
    parts[0].given = frozenset(parts[0].given) | set(unread)
    assert len(unread) > 80, "the trl config and ModelConfig fields should be here"
    with pytest.raises(RecipeError) as e:
        nb.native_config(stage, *parts)
    refused = {p.split("=", 1)[0] for p in e.value.problems if "not supported by backend native" in p}
    assert set(unread) - refused == set(), f"{stage}: fields neither read nor refused"
    assert all("(" in p for p in e.value.problems), "every refusal says what to do instead"


@pytest.mark.parametrize("stage", sorted(nb.TABLES))
def test_every_row_reads_real_fields(stage, tiny_model_dir, monkeypatch, recipe_env):
    """A row that names a field no dataclass has would hide a typo (and honour nothing)."""
    parts = _parse(stage, tiny_model_dir, monkeypatch, recipe_env)
    known = {name for part in parts for name in _init_fields(part)}
    missing = {name for name in nb.honoured(stage) if name not in known}
    # chat_template_kwargs is GRPOConfig's; PPO's TrainingArguments lacks it (open_thinking is read alone
    # there)
    assert missing <= {"chat_template_kwargs"}, missing


def test_refusal_names_the_field_and_the_backend_that_supports_it(tiny_model_dir, monkeypatch, recipe_env):
    parts = _parse(
        "sft", tiny_model_dir, monkeypatch, recipe_env, "--neftune_noise_alpha", "5", "--use_peft", "true"
    )
    with pytest.raises(RecipeError) as e:
        nb.native_config("sft", *parts)
    text = str(e.value)
    assert "neftune_noise_alpha=5.0: not supported by backend native (backend trl honours it)" in text
    assert "use_peft=True" in text and "lora recipe" in text


def test_fields_left_at_their_defaults_are_not_refused(tiny_model_dir, monkeypatch, recipe_env):
    """Writing a default explicitly (push_to_hub: false) asks for nothing the native trainer lacks."""
    parts = _parse(
        "sft", tiny_model_dir, monkeypatch, recipe_env, "--push_to_hub", "false", "--use_peft", "false"
    )
    assert {"push_to_hub", "use_peft"} <= parts[0].given
    nb.native_config("sft", *parts)


def test_done_when_command_exits_non_zero_naming_the_field(recipe_env):
    """The issue's own command, from the repository root (no model folder there: both problems are listed)."""
    cmd = [
        sys.executable,
        "recipes/sft.py",
        "--config",
        "recipes/configs/tiny/sft.yaml",
        "--backend",
        "native",
    ]
    cmd += ["--neftune_noise_alpha", "5", "--dry_run", "true"]
    proc = subprocess.run(cmd, cwd=REPO, env=recipe_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "neftune_noise_alpha" in proc.stderr


@pytest.mark.parametrize(
    ("stage", "flag", "value"),
    [("dpo", "max_prompt_length", "64"), ("grpo", "max_prompt_length", "64"), ("distill", "alpha", "0.3")],
)
def test_native_only_keys_are_refused_under_trl(stage, flag, value, tiny_model_dir, monkeypatch, recipe_env):
    module = importlib.import_module(f"minimind_hf.recipes.{stage}")
    parts = _parse(
        stage,
        tiny_model_dir,
        monkeypatch,
        recipe_env,
        "--backend",
        "trl",
        f"--{flag}",
        value,
        "--dry_run",
        "true",
    )
    with pytest.raises(RecipeError, match=f"{flag}=.*not supported by backend trl"):
        module.main(*parts)


def test_lora_fields_without_use_peft_are_refused_on_both_backends(tiny_model_dir, monkeypatch, recipe_env):
    module = importlib.import_module("minimind_hf.recipes.sft")
    for backend in ("trl", "native"):
        parts = _parse(
            "sft",
            tiny_model_dir,
            monkeypatch,
            recipe_env,
            "--backend",
            backend,
            "--lora_r",
            "4",
            "--dry_run",
            "true",
        )
        with pytest.raises(RecipeError, match="lora_r set but use_peft is false"):
            module.main(*parts)


# ------------------------------------------------------------------ the same meaning on both backends
def _native(stage, tiny_model_dir, monkeypatch, recipe_env, *flags):
    parts = _parse(stage, tiny_model_dir, monkeypatch, recipe_env, *flags)
    return nb.native_config(stage, *parts), parts[1]


def test_warmup_schedule_equals_transformers(tiny_model_dir, monkeypatch, recipe_env):
    """warmup_steps > 0 and cosine_with_min_lr: the native lr at every step is transformers' scheduler's."""
    import torch
    from transformers import get_scheduler

    from minimind_hf.native.schedule import lr_at

    cfg, t = _native(
        "sft", tiny_model_dir, monkeypatch, recipe_env, "--warmup_steps", "5", "--max_steps", "20"
    )
    assert cfg.warmup_steps == 5
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=t.learning_rate)
    sched = get_scheduler(t.lr_scheduler_type, opt, 5, 20, scheduler_specific_kwargs=t.lr_scheduler_kwargs)
    theirs = []
    for _ in range(20):
        theirs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    ours = [lr_at(s, cfg.learning_rate, 20, cfg.warmup_steps, cfg.min_lr_ratio) for s in range(20)]
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    # a warmup ratio is resolved as transformers resolves it (ceil of ratio x total steps)
    cfg, t = _native(
        "sft", tiny_model_dir, monkeypatch, recipe_env, "--warmup_steps", "0.1", "--max_steps", "25"
    )
    assert cfg.warmup_steps == t.get_warmup_steps(25) == 3


def test_precision_checkpoints_and_resume_mean_what_trl_means(tiny_model_dir, monkeypatch, recipe_env):
    cfg, _ = _native("sft", tiny_model_dir, monkeypatch, recipe_env, "--bf16", "false")
    assert cfg.mixed_precision == "no"  # fp32 under trl too, also on a bf16 GPU
    parts = _parse("sft", tiny_model_dir, monkeypatch, recipe_env)
    parts[1].save_total_limit = None
    assert (
        nb.native_config("sft", *parts).keep_last == 0
    )  # unset: keep every checkpoint, as transformers does
    cfg, _ = _native("sft", tiny_model_dir, monkeypatch, recipe_env, "--resume_from_checkpoint", "true")
    assert cfg.resume == "auto"
    # unset: auto too (a re-run continues its own unfinished run; another run's checkpoints are an error,
    # never replaced as trl's "start over" would); false starts over
    cfg, _ = _native("sft", tiny_model_dir, monkeypatch, recipe_env)
    assert cfg.resume == "auto"
    cfg, _ = _native("sft", tiny_model_dir, monkeypatch, recipe_env, "--resume_from_checkpoint", "false")
    assert cfg.resume == "never"
    cfg, _ = _native("sft", tiny_model_dir, monkeypatch, recipe_env, "--activation_checkpointing", "true")
    assert cfg.gradient_checkpointing is True


def test_resume_true_is_the_latest_checkpoint_under_trl():
    from types import SimpleNamespace

    from minimind_hf.recipes.common import resume_arg

    for given, expected in [
        ("true", True),
        ("True", True),
        (True, True),
        (None, None),
        ("false", None),
        ("d", "d"),
    ]:
        assert resume_arg(SimpleNamespace(resume_from_checkpoint=given)) == expected


def test_readme_shows_the_tables():
    readme = (REPO / "recipes" / "README.md").read_text(encoding="utf-8")
    assert nb.readme_tables() in readme, (
        "recipes/README.md: paste the tables from python -m minimind_hf.recipes.native_bridge"
    )


def test_dry_run_prints_json_for_every_stage(tiny_model_dir, monkeypatch, recipe_env, capsys):
    for stage in nb.TABLES:
        parts = _parse(stage, tiny_model_dir, monkeypatch, recipe_env, "--dry_run", "true")
        nb.run_native(stage, *parts)
        shown = json.loads(capsys.readouterr().out)
        assert shown["stage"] == stage and shown["config"]["output_dir"].startswith("runs/tiny/")
