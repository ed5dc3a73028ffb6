"""Native SFT: packed and padded runs on a tiny model, assistant-only loss, eval split, HF folder output."""

from __future__ import annotations

import json

import pytest
import torch
from _native_helpers import base_config
from safetensors.torch import load_file

from minimind_hf.data import RecordError
from minimind_hf.native.config import load_config
from minimind_hf.native.sft import SFTConfig, build_sft, run_sft


@pytest.mark.parametrize("packing", [True, False])
def test_sft_trains_every_parameter_and_writes_a_chat_model(tmp_path, tiny_model_dir, demo_files, packing):
    out = tmp_path / "sft"
    cfg = load_config(
        SFTConfig,
        None,
        base_config(
            None,  # the tokenizer of the model folder
            model=str(tiny_model_dir),
            data=[str(demo_files["sft"])],
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
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, unchanged
    assert (out / "chat_template.jinja").is_file() and (out / "modeling_minimind.py").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("eval/loss" in r for r in log)


def test_sft_loss_counts_only_assistant_tokens(tmp_path, tiny_model_dir, demo_files):
    cfg = load_config(
        SFTConfig,
        None,
        base_config(
            None,  # the tokenizer of the model folder
            model=str(tiny_model_dir),
            data=[str(demo_files["sft"])],
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


def test_sft_malformed_record_is_a_clear_error(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    good = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    broken = {"conversations": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(broken) + "\n", encoding="utf-8")
    cfg = load_config(
        SFTConfig,
        None,
        base_config(None, model=str(tiny_model_dir), data=[str(bad)], output_dir=str(tmp_path / "o")),
    )
    with pytest.raises(RecordError, match=r"bad.jsonl:2.*conversations\[1\]\.role"):
        run_sft(cfg)
