"""from-pth / to-pth: the original MiniMind's native fp16 state dicts, both ways, exactly.

The "original" checkpoints are written by this test's own code in the original layout (per-expert MoE keys,
`lm_head.weight` present, fp16), independently of the converter's key mapping.
"""

from __future__ import annotations

import json

import pytest
import torch
from convert_helpers import load_minimind, max_abs_diff
from minimind_hf.convert import ConversionError, from_pth, to_pth

from minimind_hf import MiniMindConfig, MiniMindForCausalLM

MOE = dict(use_moe=True, num_experts=4, num_experts_per_tok=1, moe_intermediate_size=96)


def original_state_dict(model: MiniMindForCausalLM) -> dict[str, torch.Tensor]:
    """What jingyaogong/minimind saves: `{k: v.half()}` of its model, experts one module each."""
    sd = {}
    for key, value in model.state_dict().items():
        if key.endswith("mlp.experts.gate_up_proj"):
            prefix = key[: -len("gate_up_proj")]
            inter = value.shape[1] // 2
            for e in range(value.shape[0]):
                sd[f"{prefix}{e}.gate_proj.weight"] = value[e, :inter].clone()
                sd[f"{prefix}{e}.up_proj.weight"] = value[e, inter:].clone()
        elif key.endswith("mlp.experts.down_proj"):
            prefix = key[: -len("down_proj")]
            for e in range(value.shape[0]):
                sd[f"{prefix}{e}.down_proj.weight"] = value[e].clone()
        else:
            sd[key] = value.clone()
    assert "lm_head.weight" in sd
    return {k: v.half() for k, v in sd.items()}


def _original(tmp_path, vocab_size, **overrides):
    torch.manual_seed(0)
    cfg = MiniMindConfig.from_preset("tiny", vocab_size=vocab_size, **overrides)
    model = MiniMindForCausalLM(cfg).eval()
    sd = original_state_dict(model)
    path = tmp_path / "full_sft_64.pth"
    torch.save(sd, path)
    return cfg, sd, path


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_pth_round_trip_is_exact(kind, tokenizer_dir, tokenizer, tmp_path):
    overrides = MOE if kind == "moe" else {}
    cfg, sd, path = _original(tmp_path, len(tokenizer), **overrides)
    folder = from_pth(
        path, tmp_path / "hf", preset="tiny", vocab_size=len(tokenizer), tokenizer=tokenizer_dir, **overrides
    )
    assert (folder / "tokenizer.json").is_file() and (folder / "chat_template.jinja").is_file()
    assert (folder / "generation_config.json").is_file()

    # The imported model computes what the fp16 weights compute (reference: the original module in fp32
    # with the fp16-rounded weights loaded).
    ref = MiniMindForCausalLM(cfg).eval()
    ref.load_state_dict(
        {k: v.float() for k, v in MiniMindForCausalLM(cfg).state_dict().items()}
        | {k: v for k, v in _fused(sd, cfg).items()}
    )
    ours = load_minimind(folder)
    ids = torch.randint(3, cfg.vocab_size, (1, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert max_abs_diff(ours(ids).logits, ref(ids).logits) < 1e-4

    back = to_pth(folder, tmp_path / "back.pth")
    rt = torch.load(back, weights_only=True)
    assert rt.keys() == sd.keys()
    for k in sd:
        assert rt[k].dtype == torch.float16, k
        assert torch.equal(rt[k], sd[k]), k


def _fused(sd: dict, cfg: MiniMindConfig) -> dict:
    """fp32 copy of an original state dict in our layout (test-side, for the reference model)."""
    out = {k: v.float() for k, v in sd.items() if ".experts." not in k}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.mlp.experts."
        if f"{p}0.gate_proj.weight" in sd:
            out[p + "gate_up_proj"] = torch.stack(
                [
                    torch.cat([sd[f"{p}{e}.gate_proj.weight"], sd[f"{p}{e}.up_proj.weight"]]).float()
                    for e in range(cfg.num_experts)
                ]
            )
            out[p + "down_proj"] = torch.stack(
                [sd[f"{p}{e}.down_proj.weight"].float() for e in range(cfg.num_experts)]
            )
    return out


def test_original_config_json(tokenizer_dir, tokenizer, tmp_path):
    """The original's config fields (rope_theta, inference_rope_scaling, n_routed_experts, ...) are
    understood."""
    cfg, sd, path = _original(tmp_path, len(tokenizer), **MOE)
    original_config = {
        "model_type": "minimind",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 192,
        "vocab_size": len(tokenizer),
        "rms_norm_eps": 1e-6,
        "rope_theta": 1e6,
        "max_position_embeddings": 32768,
        "flash_attn": True,
        "dropout": 0.0,
        "hidden_act": "silu",
        "use_moe": True,
        "n_routed_experts": 4,
        "num_experts_per_tok": 1,
        "moe_intermediate_size": 96,
        "n_shared_experts": 0,
        "scoring_func": "softmax",
        "aux_loss_alpha": 5e-4,
        "seq_aux": True,
        "norm_topk_prob": True,
        "inference_rope_scaling": True,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 16,
            "original_max_position_embeddings": 2048,
            "attention_factor": 1.0,
            "type": "yarn",
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(original_config))
    folder = from_pth(path, tmp_path / "hf", config=tmp_path / "config.json", tokenizer=tokenizer_dir)
    got = MiniMindConfig.from_pretrained(folder)
    assert got.num_experts == 4 and got.use_moe and got.router_aux_loss_coef == 5e-4
    assert got.rope_parameters["rope_type"] == "yarn" and got.rope_parameters["attention_factor"] == 1.0
    assert got.rope_parameters["rope_theta"] == 1e6


def test_wrong_preset_names_key_and_shapes(tokenizer, tmp_path):
    _, _, path = _original(tmp_path, len(tokenizer))
    with pytest.raises(ConversionError) as err:
        from_pth(path, tmp_path / "hf", preset="minimind2-small", vocab_size=len(tokenizer))
    msg = str(err.value)
    assert "model.embed_tokens.weight: checkpoint has shape (1024, 64), config expects (1024, 512)" in msg, (
        msg
    )
    assert "matches preset(s): tiny" in msg, msg
    assert not (tmp_path / "hf").exists()


def test_moe_checkpoint_with_dense_preset(tokenizer, tmp_path):
    _, _, path = _original(tmp_path, len(tokenizer), **MOE)
    with pytest.raises(ConversionError, match="per-expert keys found: this is a MoE checkpoint"):
        from_pth(path, tmp_path / "hf", preset="tiny", vocab_size=len(tokenizer))


def test_refuses_pickled_objects(tmp_path):
    """weights_only=True: a checkpoint that would run code on load is rejected."""
    path = tmp_path / "evil.pth"
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2), "extra": _NotATensor()}, path)
    with pytest.raises(ConversionError, match="not a loadable weights-only state dict"):
        from_pth(path, tmp_path / "hf", preset="tiny")


class _NotATensor:
    pass


def test_needs_preset_or_config(tmp_path):
    with pytest.raises(ConversionError, match="exactly one of a preset"):
        from_pth(tmp_path / "x.pth", tmp_path / "hf")


def test_the_original_template_gets_generation_markers_so_sft_trains(tokenizer_dir, tokenizer, tmp_path):
    """issue 14 A: `from-pth --tokenizer <the original's model folder>` kept its template, which has no
    {% generation %} markers, so `train sft` on the import failed at any max_length. A template that renders
    exactly as ours is replaced by ours (same text, plus markers); any other is kept and SFT names the
    problem."""
    import shutil
    from pathlib import Path

    from minimind_hf.cli import main
    from minimind_hf.tokenizer import chat_template

    original = (Path(__file__).parents[1] / "tokenizer" / "original_minimind_template.jinja").read_text(
        "utf-8"
    )
    assert "{% generation %}" not in original and "{%- generation %}" not in original
    tok_dir = tmp_path / "original_tokenizer"
    shutil.copytree(tokenizer_dir, tok_dir)
    (tok_dir / "chat_template.jinja").write_text(original, encoding="utf-8")
    _, _, path = _original(tmp_path, len(tokenizer))
    folder = from_pth(path, tmp_path / "hf", preset="tiny", vocab_size=len(tokenizer), tokenizer=tok_dir)
    assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == chat_template()
    sft = ["train", "sft", "--config", str(Path(__file__).parents[2] / "recipes/configs/tiny/sft.yaml"),
           "--backend", "native", "--data", "demo:sft:40", "--max_steps", "1",
           "--per_device_train_batch_size", "2", "--eval_strategy", "no", "--save_strategy", "no",
           "--torch_compile", "false"]  # fmt: skip
    assert main([*sft, "--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "sft")]) == 0

    other = original.replace("<|im_start|>assistant", "<|im_start|>bot")  # renders differently: kept as is
    (tok_dir / "chat_template.jinja").write_text(other, encoding="utf-8")
    kept = from_pth(path, tmp_path / "hf2", preset="tiny", vocab_size=len(tokenizer), tokenizer=tok_dir)
    assert (kept / "chat_template.jinja").read_text(encoding="utf-8") == other
    assert main([*sft, "--model_name_or_path", str(kept), "--output_dir", str(tmp_path / "sft2")]) == 2
