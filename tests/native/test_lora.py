"""LoRA: forward and merged weights vs peft's LoraModel with the same A/B matrices, only adapters train,
merging reproduces the adapted logits, saved adapters load in peft, and the `lora` stage through the loop."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from minimind_hf import MiniMindConfig, MiniMindForCausalLM
from minimind_hf.data import demo_corpus
from minimind_hf.native.loop import train
from minimind_hf.native.lora import (
    LoRA,
    LoRAConfig,
    LoRALinear,
    LoRASpec,
    apply_lora,
    load_lora,
    merge_lora,
    save_lora,
)

TARGETS = ["q_proj", "o_proj", "down_proj"]


def tiny(seed=0, vocab=300):
    torch.manual_seed(seed)
    return MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=vocab)).eval()


def randomise_adapters(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.weight.copy_(0.1 * torch.randn(m.lora_B.weight.shape, generator=g))


def test_forward_and_merged_weights_match_peft():
    """Same base weights, same A/B copied into peft's LoraModel (r=4, alpha=8 -> scaling 2).
    Tolerance: 1e-6 absolute on logits and merged weights (fp32, the same matmuls in the same order)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    base = tiny()
    ours = copy.deepcopy(base)
    names = apply_lora(ours, LoRASpec(rank=4, alpha=8, target_modules=TARGETS))
    assert len(names) == 3 * 2  # 2 layers
    randomise_adapters(ours)
    peft_model = get_peft_model(
        copy.deepcopy(base), PeftLoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0)
    )
    with torch.no_grad():
        for name in names:
            layer = peft_model.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(ours.get_submodule(name).lora_A.weight)
            layer.lora_B["default"].weight.copy_(ours.get_submodule(name).lora_B.weight)
            assert layer.scaling["default"] == ours.get_submodule(name).scaling == 2.0
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        ours_logits, peft_logits, base_logits = ours(ids).logits, peft_model(ids).logits, base(ids).logits
    torch.testing.assert_close(ours_logits, peft_logits, atol=1e-6, rtol=0)
    assert (ours_logits - base_logits).abs().max() > 1e-3  # the adapters do something
    merged_peft = peft_model.merge_and_unload()
    merged_ours = merge_lora(copy.deepcopy(ours))
    assert not any(isinstance(m, LoRALinear) for m in merged_ours.modules())
    for (n, p), (n2, q) in zip(
        merged_ours.state_dict().items(), merged_peft.state_dict().items(), strict=True
    ):
        assert n == n2
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=n)


def test_merge_reproduces_adapted_logits_and_saved_adapter_loads_in_peft(tmp_path):
    from peft import PeftModel

    base = tiny()
    adapted = copy.deepcopy(base)
    apply_lora(adapted, LoRASpec(rank=8, alpha=16))
    randomise_adapters(adapted)
    ids = torch.randint(0, 300, (3, 12))
    with torch.no_grad():
        want = adapted(ids).logits
        save_lora(adapted, tmp_path / "adapter")
        merged = merge_lora(copy.deepcopy(adapted))
        torch.testing.assert_close(merged(ids).logits, want, atol=1e-5, rtol=0)
        # peft reads our adapter folder (same key layout and config)
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter")
        torch.testing.assert_close(peft_model(ids).logits, want, atol=1e-6, rtol=0)
        # and we read it back
        again = load_lora(copy.deepcopy(base), tmp_path / "adapter")
        torch.testing.assert_close(again(ids).logits, want, atol=1e-6, rtol=0)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["target_modules"] == ["o_proj", "q_proj"]


def test_only_adapters_train_and_start_equal_to_base():
    base = tiny()
    model = copy.deepcopy(base).train()
    apply_lora(model, LoRASpec(rank=4, alpha=4, dropout=0.1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    model.eval()
    ids = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, base(ids).logits)  # B = 0 at the start
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        assert torch.equal(before[n], p.detach()) != (n in trainable), n  # adapters moved, nothing else
    with pytest.raises(ValueError, match="linear layer names in this model"):
        apply_lora(tiny(), LoRASpec(target_modules=["qkv"]))
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model)


def test_lora_stage_through_the_loop(tmp_path, tiny_tokenizer, make_tiny_model):
    make_tiny_model().save_pretrained(tmp_path / "base")
    tiny_tokenizer.save_pretrained(tmp_path / "base")
    data = tmp_path / "sft.jsonl"
    data.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in demo_corpus.sft_conversations(16)),
        encoding="utf-8",
    )
    cfg = LoRAConfig(
        output_dir=str(tmp_path / "out"),
        model=str(tmp_path / "base"),
        data=[str(data)],
        max_length=128,
        batch_size=4,
        max_steps=4,
        learning_rate=1e-2,
        lora_rank=4,
        report_to=["none"],
        progress=False,
        resume="never",
    )
    assert cfg.validate() == []
    from minimind_hf.native.lora import build_lora

    algo = build_lora(cfg)
    assert isinstance(algo, LoRA)
    result = train(cfg, algo)
    assert result.losses[-1] < result.losses[0]
    out = tmp_path / "out"
    merged = MiniMindForCausalLM.from_pretrained(out)  # a plain model folder: the merge
    adapted = algo.accelerator.unwrap_model(algo.model).eval()
    ids = torch.randint(0, len(tiny_tokenizer), (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-5, rtol=0)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
