"""merge-lora: the merged folder reproduces peft's own (unmerged) adapted forward pass."""

from __future__ import annotations

import pytest
import torch
from convert_helpers import load_minimind, max_abs_diff
from minimind_hf.convert import ConversionError, merge_lora, to_qwen3
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _make_adapter(base_folder, out, **lora_kwargs):
    """A peft adapter with non-zero B (init_lora_weights=False), saved the usual way."""
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **lora_kwargs))
    with torch.no_grad():  # make the update large enough to matter
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(5)
    peft_model.save_pretrained(out)
    return out


def _peft_logits(base_folder, adapter, ids):
    base = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        return peft_model(ids).logits, base  # base: peft wraps it in place


CASES = {
    "all-linear": dict(r=4, lora_alpha=8, target_modules=ALL_LINEAR),
    "rslora-patterns-modules_to_save": dict(
        r=4,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"down_proj": 2},
        alpha_pattern={"layers.1.self_attn.v_proj": 3},
        modules_to_save=["norm"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_merge_matches_peft_forward(case, trained, tmp_path):
    base = trained["dense"]
    adapter = _make_adapter(base, tmp_path / "adapter", **CASES[case])
    merged = merge_lora(base, adapter, tmp_path / "merged")
    assert (merged / "tokenizer.json").is_file() and (merged / "modeling_minimind.py").is_file()

    ids = torch.randint(3, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    expected, _ = _peft_logits(base, adapter, ids)
    plain = load_minimind(base)
    got = load_minimind(merged)
    with torch.no_grad():
        base_logits = plain(ids).logits
        merged_logits = got(ids).logits
    assert max_abs_diff(expected, base_logits) > 1e-2, "the adapter should change the logits"
    diff = max_abs_diff(merged_logits, expected)
    assert diff < 1e-4, f"{case}: merged vs peft forward max abs diff {diff:.2e}"


def test_merge_into_qwen3_base(trained, tmp_path):
    """A base exported with to-qwen3 merges into a plain Qwen3 folder."""
    base = to_qwen3(trained["moe"], tmp_path / "qwen3")
    adapter = _make_adapter(
        base, tmp_path / "adapter", r=2, lora_alpha=4, target_modules=["q_proj", "o_proj"]
    )
    merged = merge_lora(base, adapter, tmp_path / "merged")
    ids = torch.randint(3, 1000, (1, 24), generator=torch.Generator().manual_seed(0))
    expected, _ = _peft_logits(base, adapter, ids)
    got = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    assert type(got).__name__ == "Qwen3MoeForCausalLM"
    with torch.no_grad():
        assert max_abs_diff(got(ids).logits, expected) < 1e-4


def test_unsupported_adapters_are_refused(trained, tmp_path):
    base = trained["dense"]
    dora = _make_adapter(base, tmp_path / "dora", r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True)
    with pytest.raises(ConversionError, match="DoRA"):
        merge_lora(base, dora, tmp_path / "out")
    with pytest.raises(ConversionError, match="not a known LoRA adapter"):
        merge_lora(base, trained["moe"], tmp_path / "out")
    # An adapter for another architecture: its target module does not exist in the base.
    other = _make_adapter(base, tmp_path / "q-adapter", r=2, lora_alpha=4, target_modules=["q_proj"])
    with pytest.raises(ConversionError, match="not a weight of the base model"):
        merge_lora(base, _rename(other, tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _rename(adapter, tmp_path):
    """Copy an adapter, renaming its modules to ones the dense base does not have."""
    import shutil

    from safetensors.torch import load_file, save_file

    dst = tmp_path / "renamed"
    shutil.copytree(adapter, dst)
    weights = load_file(dst / "adapter_model.safetensors")
    save_file(
        {k.replace("self_attn", "cross_attn"): v for k, v in weights.items()},
        dst / "adapter_model.safetensors",
    )
    return dst


def test_an_adapter_for_another_base_of_the_same_shape_is_refused(trained, tmp_path):
    """Same shapes merge without an error into a model neither was trained as: the adapter's recorded local
    base must hold the same weights as the base given (issue 16 item 10); --allow-other-base overrides."""
    import shutil

    from safetensors.torch import load_file, save_file

    base = trained["dense"]
    adapter = _make_adapter(base, tmp_path / "adapter", r=2, lora_alpha=4, target_modules=["q_proj"])
    copy = tmp_path / "copy"  # the same weights elsewhere: fine
    shutil.copytree(base, copy)
    merge_lora(copy, adapter, tmp_path / "ok")
    other = tmp_path / "other"  # same shapes, other weights
    shutil.copytree(base, other)
    weights = load_file(other / "model.safetensors")
    save_file(
        {k: v + 0.01 for k, v in weights.items()}, other / "model.safetensors", metadata={"format": "pt"}
    )
    with pytest.raises(ConversionError, match=r"was trained on .*--allow-other-base"):
        merge_lora(other, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert merge_lora(other, adapter, tmp_path / "out", allow_other_base=True).is_dir()


def test_the_original_minimind_lora_pth_merges(trained, tmp_path):
    """issue 14 E: the original's LoRA .pth (`{module}.lora.A.weight` [r, in], `.lora.B.weight` [out, r],
    added unscaled to the square linears: y = W x + B A x) merges; the reference applies it with forward
    hooks."""
    base = trained["dense"]
    model = load_minimind(base)
    square = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m.in_features == m.out_features
    ]
    assert square and all(n.endswith(("q_proj", "o_proj")) for n in square)
    g = torch.Generator().manual_seed(0)
    lora, hooks = {}, []
    for name in square:
        linear = model.get_submodule(name)
        A = torch.randn(8, linear.in_features, generator=g) * 0.02
        B = torch.randn(linear.out_features, 8, generator=g) * 0.05
        lora[f"{name}.lora.A.weight"], lora[f"{name}.lora.B.weight"] = A, B
        hooks.append(linear.register_forward_hook(lambda m, args, out, A=A, B=B: out + args[0] @ A.T @ B.T))
    pth = tmp_path / "lora_identity_64.pth"
    torch.save(
        {f"module.{k}" if i == 0 else k: v for i, (k, v) in enumerate(lora.items())}, pth
    )  # a DDP prefix too
    ids = torch.randint(3, 1000, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).logits
    for h in hooks:
        h.remove()
    merged = load_minimind(merge_lora(base, pth, tmp_path / "merged"))
    with torch.no_grad():
        assert max_abs_diff(merged(ids).logits, expected) < 1e-4
        assert max_abs_diff(model(ids).logits, expected) > 1e-3  # the adapter mattered
    torch.save({"model.layers.0.self_attn.q_proj.lora.A.weight": lora[f"{square[0]}.lora.A.weight"]}, pth)
    with pytest.raises(ConversionError, match="lora.A only; need both A and B"):
        merge_lora(base, pth, tmp_path / "half")
