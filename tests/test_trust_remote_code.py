"""Loading a model folder never runs the folder's own Python unless asked (`--trust-remote-code`): a tampered
MiniMind folder is served, chatted with and evaluated with the package's classes."""

from __future__ import annotations

import pytest

import minimind_hf  # noqa: F401  (registers model_type "minimind" with the Auto classes)


@pytest.fixture(scope="module")
def tampered(tiny_model_dir, tmp_path_factory):
    import shutil

    out = tmp_path_factory.mktemp("tampered") / "model"
    shutil.copytree(tiny_model_dir, out)
    marker = out / "PWNED"
    for name in ("modeling_minimind.py", "configuration_minimind.py"):
        path = out / name
        path.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + path.read_text(), encoding="utf-8")
    return out, marker


def test_serve_and_eval_loaders_do_not_run_folder_code(tampered):
    from minimind_hf.eval.perplexity import load_model as eval_load

    from minimind_hf.serve.chat import load_model as serve_load

    folder, marker = tampered
    for load in (serve_load, eval_load):
        model, _ = load(folder)
        assert type(model).__module__ == "minimind_hf.modeling_minimind"
        assert not marker.exists(), load.__module__


def test_every_loading_command_has_the_opt_in_flag():
    from minimind_hf.cli import build_parser

    parser = build_parser()
    for argv in (["serve", "M"], ["chat", "M"], ["webui", "M"], ["eval", "ppl", "M", "--data", "x"],
                 ["eval", "tools", "M"], ["eval", "run", "M"]):  # fmt: skip
        assert parser.parse_args(argv).trust_remote_code is False, argv
        assert parser.parse_args([*argv, "--trust-remote-code"]).trust_remote_code is True, argv


def test_a_folder_that_needs_its_own_code_is_refused_without_the_flag(tampered, tmp_path):
    """A folder whose config points at its own classes (auto_map): loading runs nothing and fails, naming the
    option; this is the case a hard-coded trust_remote_code=True would have executed."""
    import json
    import shutil

    from minimind_hf.eval.perplexity import load_model as eval_load

    from minimind_hf.serve.chat import load_model as serve_load

    folder, _ = tampered
    evil = tmp_path / "evil"
    shutil.copytree(folder, evil)
    marker = evil / "RAN"
    (evil / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n", encoding="utf-8")
    config = json.loads((evil / "config.json").read_text())
    config.update(model_type="evil_lm", auto_map={"AutoConfig": "evil.C", "AutoModelForCausalLM": "evil.M"})
    (evil / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for load in (serve_load, eval_load):
        with pytest.raises(ValueError, match="trust_remote_code"):
            load(evil)
        assert not marker.exists()
