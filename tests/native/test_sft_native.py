"""Native SFT: packed and padded runs on a tiny model, assistant-only loss, eval split, HF folder output."""

from __future__ import annotations

import json

import pytest
import torch
from _native_helpers import base_config, corpus, tokenizer
from safetensors.torch import load_file

from minimind_hf.configuration_minimind import MiniMindConfig
from minimind_hf.data import RecordError
from minimind_hf.modeling_minimind import MiniMindForCausalLM
from minimind_hf.native.config import load_config
from minimind_hf.native.sft import SFTConfig, build_sft, run_sft


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """A 'pretrained' starting folder (random tiny weights + the test tokenizer)."""
    path = tmp_path_factory.mktemp("sft_start")
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=len(tokenizer())))
    model.save_pretrained(path)
    tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("packing", [True, False])
def test_sft_trains_every_parameter_and_writes_a_chat_model(tmp_path, start_model, packing):
    out = tmp_path / "sft"
    cfg = load_config(
        SFTConfig,
        None,
        base_config(
            model=str(start_model),
            tokenizer=None,
            data=[str(corpus()["sft"])],
            output_dir=str(out),
            max_length=256,
            packing=packing,
            batch_size=4,
            max_steps=4,
            learning_rate=5e-3,
            eval_ratio=0.1,
            max_conversations=80,
        ),
    )
    result = run_sft(cfg)
    assert result.steps == 4 and all(map(lambda x: x == x, result.losses))
    assert "eval/loss" in result.eval and result.eval["eval/loss"] > 0
    before, after = load_file(start_model / "model.safetensors"), load_file(out / "model.safetensors")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, unchanged
    assert (out / "chat_template.jinja").is_file() and (out / "modeling_minimind.py").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("eval/loss" in r for r in log)


def test_sft_loss_counts_only_assistant_tokens(tmp_path, start_model):
    cfg = load_config(
        SFTConfig,
        None,
        base_config(
            model=str(start_model),
            tokenizer=None,
            data=[str(corpus()["sft"])],
            output_dir=str(tmp_path / "o"),
            max_length=256,
            packing=True,
            max_conversations=40,
        ),
    )
    algo = build_sft(cfg)
    row = algo.train_dataset[0]
    batch = algo.collate_fn([row])
    tok = algo.tokenizer
    labelled = tok.decode([t for t in batch["labels"][0].tolist() if t != -100])
    assert "<|im_end|>" in labelled and "<|im_start|>" not in labelled
    # the count the loop normalises by is exactly the label tokens after the shift
    assert algo.num_items(batch) == int((batch["labels"][:, 1:] != -100).sum())
    starts = (algo.train_dataset.position_ids == 0).sum(axis=1)
    assert starts.max() >= 2 and starts.sum() == 40  # conversations share rows, each with its own positions


def test_sft_malformed_record_is_a_clear_error(tmp_path, start_model):
    bad = tmp_path / "bad.jsonl"
    good = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    broken = {"conversations": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(broken) + "\n", encoding="utf-8")
    cfg = load_config(
        SFTConfig,
        None,
        base_config(model=str(start_model), tokenizer=None, data=[str(bad)], output_dir=str(tmp_path / "o")),
    )
    with pytest.raises(RecordError, match=r"bad.jsonl:2.*conversations\[1\]\.role"):
        run_sft(cfg)
