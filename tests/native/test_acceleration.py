"""Training-speed levers: bf16 autocast on the CPU, torch.compile, Muon, the thread tuner.

Each is checked against an independent reference: fp32 training (bf16 must track its loss curve), the eager
model (the compiled one must give the same losses), torch's own Muon and AdamW stepped separately (the
combined optimizer must make the same update and resume exactly)."""

from __future__ import annotations

import copy

import pytest
import torch
from _native_helpers import base_config

from minimind_hf import MiniMindConfig, MiniMindForCausalLM
from minimind_hf.native import acceleration
from minimind_hf.native.acceleration import (
    CompiledRegions,
    ThreadTuner,
    resolve_compile,
    resolve_precision,
)
from minimind_hf.native.config import load_config
from minimind_hf.native.loop import TrainConfig, default_param_groups
from minimind_hf.native.optim import MuonWithAdamW, build_optimizer, is_muon_matrix
from minimind_hf.native.pretrain import Pretrain, PretrainConfig, run_pretrain


@pytest.fixture
def pretrain_cfg(demo_files, tiny_tokenizer_dir, tmp_path):
    """`pretrain_cfg(name, **settings)`: a short pretraining config on the demo corpus, in tmp_path/name."""

    def make(name, **kw) -> PretrainConfig:
        settings = base_config(tiny_tokenizer_dir, data=[str(demo_files["pretrain"])],
                               output_dir=str(tmp_path / name), seq_len=64, batch_size=4, max_steps=12,
                               learning_rate=3e-3, resume="never")  # fmt: skip
        settings.update(kw)
        return load_config(PretrainConfig, None, settings)

    return make


def _tiny() -> MiniMindForCausalLM:
    torch.manual_seed(0)
    return MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=300))


# ---------------------------------------------------------------------------------------------- precision
def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_instructions(monkeypatch):
    for flag in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, flag, lambda: False, raising=False)
    assert resolve_precision("auto", "cpu") == "no"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("no", "cpu") == "no" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "mps") == "no"


def test_bf16_training_tracks_fp32_and_hands_back_a_plain_fp32_model(pretrain_cfg):
    fp32 = run_pretrain(pretrain_cfg("fp32", mixed_precision="no"))
    cfg = pretrain_cfg("bf16", mixed_precision="bf16")
    from minimind_hf.native.pretrain import build_pretrain

    algo = build_pretrain(cfg)
    from minimind_hf.native.loop import train

    bf16 = train(cfg, algo).losses
    # the same curve within bf16 rounding (a wrong cast, e.g. bf16 master weights, drifts by far more)
    assert bf16[0] == pytest.approx(fp32.losses[0], rel=5e-3)
    for a, b in zip(bf16, fp32.losses, strict=True):
        assert a == pytest.approx(b, rel=2e-2), (bf16, fp32.losses)
    assert bf16[-1] < bf16[0] - 0.3
    model = algo.accelerator.unwrap_model(algo.model)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    # after train() the model runs without autocast: the same logits as an fp32 copy of its weights
    assert "_original_forward" not in model.__dict__
    copy_ = MiniMindForCausalLM(model.config)
    copy_.load_state_dict(model.state_dict())
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    model.eval()
    torch.testing.assert_close(model(ids).logits, copy_.eval()(ids).logits, rtol=0, atol=0)


def test_cpu_bf16_autocast_runs_sdpa_in_fp32_and_the_projections_in_bf16(monkeypatch):
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        seen.append((query.dtype, key.dtype, value.dtype, torch.is_autocast_enabled("cpu")))
        return real(query, key, value, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = _tiny()
    model.set_attn_implementation("sdpa")
    ids = torch.randint(0, 300, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
    assert seen == [(torch.float32, torch.float32, torch.float32, False)] * 2  # both layers
    assert logits.dtype == torch.bfloat16  # the matmuls around attention stay in bf16
    torch.testing.assert_close(logits.float(), model(input_ids=ids).logits, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------------------- compile
def test_compile_auto_only_where_it_pays(monkeypatch):
    dense = _tiny()

    class Lm:
        name, compile_friendly = "pretrain", True

    class Rl:
        name, compile_friendly = "grpo", False

    assert resolve_compile("auto", algo=Lm, model=dense, total_steps=1000, device_type="cpu") is True
    assert resolve_compile("auto", algo=Lm, model=dense, total_steps=10, device_type="cpu") is False
    assert resolve_compile("auto", algo=Rl, model=dense, total_steps=1000, device_type="cpu") is False
    moe = MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=300, use_moe=True))
    assert resolve_compile("auto", algo=Lm, model=moe, total_steps=1000, device_type="cpu") is False
    assert resolve_compile(False, algo=Lm, model=dense, total_steps=1000, device_type="cpu") is False
    monkeypatch.setattr(acceleration.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert resolve_compile("auto", algo=Lm, model=dense, total_steps=1000, device_type="cpu") is False
    with pytest.raises(RuntimeError, match="compile: true needs a C\\+\\+ compiler"):
        resolve_compile(True, algo=Lm, model=dense, total_steps=1000, device_type="cpu")


def test_compile_values_are_validated(pretrain_cfg):
    from minimind_hf.native.config import ConfigError

    with pytest.raises(ConfigError, match="compile must be true, false or auto"):
        pretrain_cfg("bad", compile="yes")
    with pytest.raises(ConfigError, match="optimizer must be one of adamw, muon"):
        pretrain_cfg("bad", optimizer="sgd")
    # Muon's settings with AdamW would do nothing: refused by name, not dropped
    with pytest.raises(ConfigError, match="muon_lr, muon_momentum set, but optimizer is 'adamw'"):
        pretrain_cfg("bad", optimizer="adamw", muon_lr=0.05, muon_momentum=0.9)
    assert pretrain_cfg("ok", muon_lr=0.05).muon_lr == 0.05  # pretraining's default is Muon


def test_compile_true_without_a_compiler_is_refused_before_any_work(pretrain_cfg, monkeypatch):
    from minimind_hf.native.config import ConfigError

    monkeypatch.setattr(acceleration.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ConfigError, match="compile: true needs a C\\+\\+ compiler"):
        pretrain_cfg("nocc", compile=True, use_cpu=True)


@pytest.mark.skipif(not acceleration._compiler_available("cpu"), reason="no C++ compiler for inductor")
def test_compiled_training_gives_the_eager_losses(pretrain_cfg):
    eager = run_pretrain(pretrain_cfg("eager", max_steps=3, compile=False))
    compiled = run_pretrain(pretrain_cfg("compiled", max_steps=3, compile=True))
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4, abs=1e-5)


def test_compiled_regions_share_one_layer_graph_and_leave_the_model_plain():
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    model = _tiny()  # 2 decoder layers
    plain_layers, plain_loss = list(model.model.layers), model.loss_function
    ids = torch.randint(0, 300, (2, 16))
    eager = model(input_ids=ids, labels=ids).loss
    torch._dynamo.reset()
    counters.clear()
    regions = CompiledRegions(model, backend="aot_eager")  # dynamo's graphs without inductor's C++ build
    with regions.active():
        assert all(isinstance(layer, OptimizedModule) for layer in model.model.layers)
        loss = regions.forward_model()(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.testing.assert_close(loss, eager)
    assert list(model.model.layers) == plain_layers and model.loss_function is plain_loss
    assert model.model.layers[1].self_attn.q_proj.weight.grad is not None
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 2, counters  # one graph for both layers, one for the loss
    model(input_ids=torch.randint(0, 300, (1, 7)))  # outside `active`: another shape, nothing compiled
    assert counters["stats"]["unique_graphs"] == graphs


# ---------------------------------------------------------------------------------------------- Muon
def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = _tiny()
    names = {n for n, p in model.named_parameters() if is_muon_matrix(n, p)}
    assert names and all(any(k in n for k in ("_proj.weight",)) for n in names)
    assert not any("embed" in n or "norm" in n or "lm_head" in n for n in names)
    expected = {n for n, _ in model.named_parameters() if n.endswith("_proj.weight")}
    assert names == expected


def _muon_settings(**kw):
    cfg = TrainConfig(optimizer="muon", learning_rate=1e-2, weight_decay=0.1)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _loss_step(model, optimizer, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (2, 24), generator=g)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def test_muon_with_adamw_makes_torch_muons_and_adamws_update():
    cfg = _muon_settings()
    ours_model, ref_model = _tiny(), _tiny()
    ours = build_optimizer(cfg, default_param_groups(ours_model, cfg.weight_decay), ours_model)
    assert isinstance(ours, MuonWithAdamW)
    # the reference: torch's two optimizers built by hand from the documented split
    matrices = [p for n, p in ref_model.named_parameters() if is_muon_matrix(n, p)]
    plain = [(n, p) for n, p in ref_model.named_parameters() if not is_muon_matrix(n, p)]
    rest_decay = [p for n, p in plain if p.ndim >= 2 and "embed" not in n and "norm" not in n]
    rest_plain = [p for n, p in plain if p.ndim < 2 or "embed" in n or "norm" in n]
    assert (cfg.muon_lr, cfg.muon_adjust_lr) == (0.02, "original")  # the documented defaults
    muon = torch.optim.Muon(
        matrices, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="original"
    )
    groups = [{"params": rest_decay, "weight_decay": 0.1}, {"params": rest_plain, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    adamw = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, fused=True)  # as ours on a CPU
    for seed in range(3):
        _loss_step(ours_model, ours, seed)
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, 300, (2, 24), generator=g)
        ref_model(input_ids=ids, labels=ids).loss.backward()
        muon.step()
        adamw.step()
        ref_model.zero_grad(set_to_none=True)
    for (name, a), b in zip(ours_model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_muon_state_round_trips_and_the_schedule_reaches_both_halves():
    cfg = _muon_settings()
    model = _tiny()
    opt = build_optimizer(cfg, default_param_groups(model, cfg.weight_decay), model)
    _loss_step(model, opt, 0)
    saved_model, saved_state = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _loss_step(model, opt, 1)
    again = _tiny()
    again.load_state_dict(saved_model)
    opt2 = build_optimizer(cfg, default_param_groups(again, cfg.weight_decay), again)
    opt2.load_state_dict(saved_state)
    _loss_step(again, opt2, 1)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    for group in opt.param_groups:  # a schedule writes group["lr"]: it must be the inner optimizers' groups
        group["lr"] = 0.123
    assert all(g["lr"] == 0.123 for g in opt.muon.param_groups + opt.adamw.param_groups)
    with pytest.raises(ValueError, match="not a Muon \\+ AdamW state"):
        opt2.load_state_dict(torch.optim.AdamW(again.parameters()).state_dict())


def test_muon_run_through_the_loop_resumes_exactly(pretrain_cfg):
    full = run_pretrain(pretrain_cfg("full", optimizer="muon", max_steps=6))
    cut = pretrain_cfg("cut", optimizer="muon", max_steps=6, save_every=3)
    from minimind_hf.native.loop import train
    from minimind_hf.native.pretrain import build_pretrain

    class Stop(Pretrain):  # an interrupted run: dies after the step-3 checkpoint
        def prepare_batch(self, model, batch):
            if getattr(self, "seen", 0) == 4:
                raise KeyboardInterrupt
            self.seen = getattr(self, "seen", 0) + 1
            return batch

    algo = build_pretrain(cut)
    stop = Stop(cut, algo.model, algo.tokenizer, algo.train_dataset, algo.eval_dataset)
    with pytest.raises(KeyboardInterrupt):
        train(cut, stop)
    resumed = run_pretrain(pretrain_cfg("cut", optimizer="muon", max_steps=6, save_every=3, resume="auto"))
    assert resumed.resumed_from.endswith("step_000003")
    assert resumed.losses == full.losses[3:]


# ---------------------------------------------------------------------------------------------- threads
class _Clock:
    """A fake clock: a step at n threads takes `cost[n]` seconds."""

    def __init__(self, cost):
        self.now, self.cost = 0.0, cost

    def __call__(self):
        return self.now

    def run_step(self, tuner: ThreadTuner, tokens: int = 100, warmup: bool = False):
        tuner.before_step()
        self.now += self.cost[torch.get_num_threads()]
        tuner.after_step(tokens, warmup=warmup)


def test_thread_tuner_keeps_the_faster_count_and_rechecks(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(acceleration, "_available_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        clock = _Clock({2: 2.0, 1: 1.0})  # a busy machine: one thread is faster
        tuner = ThreadTuner(0, trial_steps=2, recheck_every=10, clock=clock)
        assert tuner.candidates == [2, 1]
        clock.run_step(tuner, warmup=True)  # not counted (compilation, first-touch)
        for _ in range(4):
            clock.run_step(tuner)
        assert tuner.chosen == 1 and torch.get_num_threads() == 1
        clock.cost = {2: 0.5, 1: 1.0}  # the other process ended
        for _ in range(10 + 4):
            clock.run_step(tuner)
        assert tuner.chosen == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_thread_tuner_leaves_a_fixed_count_alone(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert not ThreadTuner(1).active and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert not ThreadTuner(0).active  # torchrun / the user fixed it
    finally:
        torch.set_num_threads(before)
