"""Model cards: the Hub's front matter and a load snippet that works without minimind_hf."""

from __future__ import annotations

import yaml

from minimind_hf.model_card import write_model_card


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_for_a_model_trained_from_a_local_folder(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    out = tmp_path / "sft"
    path = write_model_card(
        out, stage="sft", backend="native", base_model=str(base), data=["demo:sft:20", "org/set"]
    )
    text = path.read_text(encoding="utf-8")
    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert "sft" in meta["tags"] and meta["datasets"] == ["org/set"]  # only Hub names go to the front matter
    assert "base_model" not in meta  # a local folder is not a Hub link; the body names it
    assert str(base.resolve()) in text and "demo:sft:20" in text
    assert f'from_pretrained("{out.resolve()}", trust_remote_code=True)' in text


def test_card_for_an_adapter_names_its_hub_base(tmp_path):
    text = write_model_card(
        tmp_path / "a", stage="lora", backend="trl", base_model="org/minimind", adapter=True
    )
    text = text.read_text(encoding="utf-8")
    meta = _front_matter(text)
    assert meta["base_model"] == "org/minimind" and meta["library_name"] == "peft" and "lora" in meta["tags"]
    assert "PeftModel.from_pretrained" in text


def test_convert_outputs_carry_a_card(tmp_path):
    """to-qwen3 writes a plain transformers folder (no remote code in the snippet); from-qwen3 a MiniMind
    one."""
    import torch
    from minimind_hf.convert.hf import from_qwen3, to_qwen3

    from minimind_hf import MiniMindConfig, MiniMindForCausalLM

    torch.manual_seed(0)
    MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=300)).save_pretrained(tmp_path / "mm")
    qwen = to_qwen3(tmp_path / "mm", tmp_path / "qwen")
    text = (qwen / "README.md").read_text(encoding="utf-8")
    assert (
        "to-qwen3" in text
        and f'from_pretrained("{qwen.resolve()}")' in text
        and "trust_remote_code" not in text
    )
    back = from_qwen3(qwen, tmp_path / "back")
    text = (back / "README.md").read_text(encoding="utf-8")
    assert (
        f'from_pretrained("{back.resolve()}", trust_remote_code=True)' in text and str(qwen.resolve()) in text
    )


def test_saved_folders_carry_minimind_sampling_defaults(tmp_path):
    """generation_config.json: do_sample with temperature / top_p 0.85 (the original's), read back by
    transformers and by the Ollama export."""
    import json

    from minimind_hf.convert.ollama import _sampling_defaults
    from transformers import AutoModelForCausalLM

    from minimind_hf import MiniMindConfig, MiniMindForCausalLM

    MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=300)).save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    assert (saved["do_sample"], saved["temperature"], saved["top_p"]) == (True, 0.85, 0.85)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m", trust_remote_code=True)
    assert loaded.generation_config.temperature == 0.85 and loaded.generation_config.do_sample
    params = _sampling_defaults(tmp_path / "m", None)
    assert (params["temperature"], params["top_p"]) == (0.85, 0.85)
