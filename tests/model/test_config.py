"""MiniMindConfig: presets against the reference table, validation errors, serialisation, YaRN."""

import pytest
import torch

from minimind_hf import PRESETS, MiniMindConfig, MiniMindForCausalLM

# Parameter counts from ../shared/reference/minimind.md (millions, as published).
REFERENCE_PARAMS_M = {"minimind3": 63.9, "minimind3-moe": 198.4, "minimind2-small": 25.8, "minimind2": 104.0}


@pytest.mark.parametrize("preset", list(REFERENCE_PARAMS_M))
def test_preset_parameter_counts_match_reference(preset):
    with torch.device("meta"):
        model = MiniMindForCausalLM(MiniMindConfig.from_preset(preset))
    # Tied embeddings are counted once by .parameters().
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(millions, 1) == pytest.approx(REFERENCE_PARAMS_M[preset], abs=0.051), millions


def test_preset_shapes():
    c = MiniMindConfig.from_preset("minimind3")
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (
        768,
        8,
        8,
        4,
        96,
    )
    assert c.intermediate_size == 2432 and c.use_qk_norm and c.rms_norm_eps == 1e-6
    assert c.rope_parameters == {"rope_type": "default", "rope_theta": 1e6}
    assert c.tie_word_embeddings and c.vocab_size == 6400
    m2 = MiniMindConfig.from_preset("minimind2")
    assert not m2.use_qk_norm and m2.rms_norm_eps == 1e-5 and m2.intermediate_size == 2048
    moe = MiniMindConfig.from_preset("minimind3-moe")
    assert moe.use_moe and moe.num_experts == 4 and moe.num_experts_per_tok == 1 and moe.norm_topk_prob
    assert moe.router_aux_loss_coef == 5e-4
    # Dense models declare no aux loss: trl turns its MoE aux-loss path on whenever the coefficient is
    # non-zero.
    assert c.router_aux_loss_coef == 0.0
    assert MiniMindConfig.from_preset("minimind3", router_aux_loss_coef=0.01).router_aux_loss_coef == 0.01
    assert MiniMindConfig.from_preset("tiny", hidden_size=128, head_dim=32).hidden_size == 128


def test_default_ffn_rule():
    # ceil(hidden * pi / 64) * 64, the original's default
    assert MiniMindConfig(hidden_size=768).intermediate_size == 2432
    assert MiniMindConfig(hidden_size=512, num_attention_heads=8, head_dim=64).intermediate_size == 1664


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="Unknown MiniMind preset 'minimind9'.*tiny.*minimind3"):
        MiniMindConfig.from_preset("minimind9")
    assert set(PRESETS) == {"tiny", "minimind3", "minimind3-moe", "minimind2-small", "minimind2"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(hidden_size=100, num_attention_heads=8),
            "hidden_size \\(100\\) is not divisible by num_attention_heads",
        ),
        (dict(num_key_value_heads=3), "num_key_value_heads \\(3\\) must divide num_attention_heads \\(8\\)"),
        (
            dict(use_moe=True, num_experts_per_tok=5),
            "num_experts_per_tok \\(5\\) must be between 1 and num_experts",
        ),
        (dict(rope_parameters={"rope_type": "nope", "rope_theta": 1e6}), "rope_type 'nope' is not one of"),
        (
            dict(
                rope_parameters={"rope_type": "yarn", "factor": 0.5, "original_max_position_embeddings": 2048}
            ),
            "factor must be >= 1 for yarn",
        ),
        (dict(hidden_size=-8), "hidden_size must be positive"),
    ],
)
def test_validation_errors_are_clear(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MiniMindConfig(**kwargs)


def test_a_config_edited_after_construction_is_checked_by_validate_and_save(tmp_path):
    """The checks are also transformers' ``validate_*`` hook: `validate()` and `save_pretrained` refuse a
    config made inconsistent after it was built, and nothing is written."""
    c = MiniMindConfig.from_preset("tiny")
    c.validate()
    c.num_key_value_heads = 3
    with pytest.raises(Exception, match="num_key_value_heads \\(3\\) must divide num_attention_heads") as err:
        c.validate()
    assert "validate_minimind_architecture" in str(err.value)
    with pytest.raises(Exception, match="num_key_value_heads"):
        c.save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad" / "config.json").exists()


def test_all_problems_reported_together():
    with pytest.raises(ValueError) as err:
        MiniMindConfig(num_key_value_heads=3, use_moe=True, num_experts_per_tok=9)
    assert "num_key_value_heads" in str(err.value) and "num_experts_per_tok" in str(err.value)


def test_explicit_head_dim_allows_indivisible_hidden():
    c = MiniMindConfig(hidden_size=100, num_attention_heads=4, num_key_value_heads=2, head_dim=32)
    assert c.head_dim == 32


def test_yarn_defaults_are_minimind_not_transformers():
    c = MiniMindConfig.from_preset("minimind3", inference_rope_scaling=True)
    assert c.rope_parameters == {
        "rope_type": "yarn",
        "factor": 16.0,
        "original_max_position_embeddings": 2048,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "attention_factor": 1.0,
        "rope_theta": 1e6,
    }


def test_legacy_rope_keys_of_original_checkpoints():
    # config.json of the original carries rope_theta and rope_scaling with "type".
    c = MiniMindConfig(
        rope_theta=1e6,
        rope_scaling={
            "type": "yarn",
            "factor": 16,
            "original_max_position_embeddings": 2048,
            "beta_fast": 32,
            "beta_slow": 1,
            "attention_factor": 1.0,
        },
    )
    assert c.rope_parameters["rope_type"] == "yarn" and "type" not in c.rope_parameters
    assert c.rope_parameters["rope_theta"] == 1e6 and c.rope_parameters["attention_factor"] == 1.0


def test_save_load_round_trip(tmp_path):
    c = MiniMindConfig.from_preset("minimind3-moe", inference_rope_scaling=True, router_top1_gradient=False)
    c.save_pretrained(tmp_path)
    loaded = MiniMindConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == c.to_dict()
    assert loaded.model_type == "minimind"
