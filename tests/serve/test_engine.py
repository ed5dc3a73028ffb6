"""The engine: batched decoding equals one-at-a-time decoding; seeds, limits and cancellation."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from _serve_helpers import CASES

from minimind_hf.serve.chat import encode_chat_prompt
from minimind_hf.serve.engine import Engine, Finish
from minimind_hf.serve.sampling import SamplingParams


@pytest.fixture(scope="module")
def engine(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with Engine(model, tok, max_batch_size=3) as eng:  # small, so requests join a running batch
        yield eng


@torch.no_grad()
def reference_greedy(model, ids: list[int], n: int) -> tuple[list[int], float]:
    """Greedy decoding re-running the whole prefix each step: no cache, no batch, no padding."""
    seq, margins = list(ids), []
    for _ in range(n):
        logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1].float()
        top2 = logits.topk(2).values
        margins.append((top2[0] - top2[1]).item())
        seq.append(int(logits.argmax()))
    return seq[len(ids) :], min(margins)


def greedy_jobs(model, tok, lengths, seed: int, new_tokens: int):
    """Random prompts of ``lengths`` as greedy engine jobs, with the reference's text for each; prompts whose
    reference has a near-tie (which batching noise could flip) are left out."""
    g = torch.Generator().manual_seed(seed)
    jobs, expected = [], []
    for n in lengths:
        ids = torch.randint(40, len(tok), (n,), generator=g).tolist()
        ref, margin = reference_greedy(model, ids, new_tokens)
        if margin > 1e-3:
            jobs.append((ids, SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)))
            expected.append(tok.decode(ref, skip_special_tokens=True))
    return jobs, expected


def run_concurrently(engine, jobs: list[tuple[list[int], SamplingParams]]) -> list[tuple[str, Finish]]:
    results: list = [None] * len(jobs)

    def work(i, ids, params):
        results[i] = engine.generate_text(ids, params)

    threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_batched_greedy_equals_unbatched_reference(engine, model_and_tokenizer):
    model, tok = model_and_tokenizer
    g = torch.Generator().manual_seed(0)
    prompts = [encode_chat_prompt(tok, c.messages(), list(c.tools), c.thinking)[1] for c in CASES.values()]
    prompts += [torch.randint(40, len(tok), (n,), generator=g).tolist() for n in (3, 17, 40, 9, 25, 60)]
    jobs, expected = [], []
    for ids in prompts:
        ref, margin = reference_greedy(model, ids, 12)
        if margin < 1e-3:  # a near-tie could flip with batching noise; such a prompt tests nothing
            continue
        jobs.append((ids, SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)))
        expected.append(tok.decode(ref, skip_special_tokens=True))
    assert len(jobs) >= 7
    before = engine.max_rows_seen
    results = run_concurrently(engine, jobs)
    assert [text for text, _ in results] == expected
    assert all(f.reason == "length" and f.completion_tokens == 12 for _, f in results)
    assert engine.max_rows_seen == 3 or before == 3  # requests really were decoded together


def test_memorised_replies_and_eos(engine, model_and_tokenizer):
    _, tok = model_and_tokenizer
    for case in CASES.values():
        ids = encode_chat_prompt(tok, case.messages(), list(case.tools), case.thinking)[1]
        text, finish = engine.generate_text(ids, SamplingParams(max_new_tokens=200, temperature=0.0))
        assert text == case.completion()
        assert finish.reason == "stop" and finish.prompt_tokens == len(ids)


def test_seed_reproducible_under_concurrency(engine, model_and_tokenizer):
    _, tok = model_and_tokenizer
    ids = encode_chat_prompt(tok, [{"role": "user", "content": "tell me something random"}])[1]

    def params(seed):
        return SamplingParams(max_new_tokens=24, temperature=2.0, seed=seed, ignore_eos=True)

    noise = [(ids, SamplingParams(max_new_tokens=30, temperature=1.0, ignore_eos=True))] * 3
    first = run_concurrently(engine, [(ids, params(1)), *noise, (ids, params(2)), (ids, params(3))])
    second = run_concurrently(engine, [(ids, params(3)), (ids, params(1)), (ids, params(2))])
    alone = engine.generate_text(ids, params(1))
    texts1 = {1: first[0][0], 2: first[4][0], 3: first[5][0]}
    texts2 = {3: second[0][0], 1: second[1][0], 2: second[2][0]}
    assert texts1 == texts2
    assert alone[0] == texts1[1]
    assert len(set(texts1.values())) > 1, "different seeds should sample differently"


def test_max_tokens_stop_strings_and_context_limit(engine, model_and_tokenizer):
    _, tok = model_and_tokenizer
    ids = encode_chat_prompt(tok, CASES["count"].messages())[1]
    text, finish = engine.generate_text(ids, SamplingParams(max_new_tokens=3, temperature=0.0))
    assert finish.reason == "length" and finish.completion_tokens == 3
    assert CASES["count"].completion().startswith(text) and text
    text, finish = engine.generate_text(
        ids, SamplingParams(max_new_tokens=100, temperature=0.0, stop=("seven", "five"))
    )
    assert (text, finish.reason) == ("one two three four ", "stop")
    long_prompt = (ids * engine.context_length)[: engine.context_length - 5]
    text, finish = engine.generate_text(
        long_prompt, SamplingParams(max_new_tokens=100, temperature=0.0, ignore_eos=True)
    )
    assert finish.reason == "length" and finish.completion_tokens == 5
    with pytest.raises(ValueError):
        engine.submit(ids * engine.context_length, SamplingParams(max_new_tokens=1), lambda e: None)


def test_cancelled_request_stops_generating(engine, model_and_tokenizer):
    _, tok = model_and_tokenizer
    ids = encode_chat_prompt(tok, CASES["hello"].messages())[1]
    events = []
    handle = engine.submit(
        ids, SamplingParams(max_new_tokens=300, temperature=0.0, ignore_eos=True), events.append
    )
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.01)
    handle.cancel()
    while not (events and isinstance(events[-1], Finish)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(events[-1], Finish) and events[-1].reason == "cancelled"
    assert events[-1].completion_tokens < 300
    # the engine still serves afterwards
    assert (
        engine.generate_text(ids, SamplingParams(max_new_tokens=200, temperature=0.0))[0]
        == CASES["hello"].completion()
    )


class RecordingDecoder:
    """Wraps the engine's decoder and records each call: ("prefill", [chunk lengths]) or ("decode", rows)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def prefill(self, work):
        self.calls.append(("prefill", [len(chunk) for _, chunk in work]))
        return self.inner.prefill(work)

    def decode(self, tokens, positions):
        self.calls.append(("decode", len(tokens)))
        return self.inner.decode(tokens, positions)


def test_small_prefill_chunks_pack_prompts_without_padding(model_and_tokenizer):
    """Prompts split into 5-token chunks, several packed in one forward, give the reference's tokens; the
    prompt tokens fed to the model are exactly the prompts' own (no padding to the longest)."""
    model, tok = model_and_tokenizer
    jobs, expected = greedy_jobs(model, tok, (3, 23, 11, 40, 7), seed=1, new_tokens=8)
    assert len(jobs) >= 4
    with Engine(model, tok, max_batch_size=4, prefill_chunk=5, prefix_cache_tokens=0) as eng:
        eng.decoder = recorder = RecordingDecoder(eng.decoder)
        results = run_concurrently(eng, jobs)
    assert [text for text, _ in results] == expected
    prefills = [lengths for kind, lengths in recorder.calls if kind == "prefill"]
    assert sum(map(sum, prefills)) == sum(len(ids) for ids, _ in jobs)
    assert any(len(lengths) > 1 for lengths in prefills), "waiting prompts should share a forward"


def test_running_request_keeps_decoding_while_a_long_prompt_prefills(model_and_tokenizer):
    model, tok = model_and_tokenizer
    short = encode_chat_prompt(tok, CASES["hello"].messages())[1]
    long_prompt = (short * 20)[:200]
    with Engine(model, tok, prefill_chunk=16, prefix_cache_tokens=0) as eng:
        eng.decoder = recorder = RecordingDecoder(eng.decoder)
        events = []
        eng.submit(short, SamplingParams(max_new_tokens=60, temperature=0.0, ignore_eos=True), events.append)
        while eng.steps < 3:
            time.sleep(0.005)
        text, finish = eng.generate_text(long_prompt, SamplingParams(max_new_tokens=2, temperature=0.0))
        while not (events and isinstance(events[-1], Finish)):
            time.sleep(0.01)
    start = next(i for i, c in enumerate(recorder.calls) if c == ("prefill", [16]))
    window = recorder.calls[start : start + 2 * (200 // 16)]
    # alternating: one 16-token chunk of the long prompt, one decoding step of the running request
    assert window[0::2] == [("prefill", [16])] * len(window[0::2])
    assert all(kind == "decode" for kind, _ in window[1::2])
    assert finish.prompt_tokens == 200 and events[-1].completion_tokens == 60


def _submit_group(eng, ids, params_list, group, sinks):
    handles = []
    for params in params_list:
        events: list = []
        sinks.append(events)
        handles.append(eng.submit(ids, params, events.append, group=group))
    return handles


def _text_when_done(events: list, deadline: float) -> tuple[str, Finish]:
    while not (events and isinstance(events[-1], Finish)):
        assert time.monotonic() < deadline, "the request did not finish"
        time.sleep(0.005)
    return "".join(e for e in events if isinstance(e, str)), events[-1]


def test_choices_of_one_request_share_one_prefill(model_and_tokenizer):
    """The n choices of a request (one group, one prompt) are prefilled once and each samples as it would
    alone; when the choice whose prefill the others follow is cancelled, they still finish."""
    model, tok = model_and_tokenizer
    ids = torch.randint(40, len(tok), (30,), generator=torch.Generator().manual_seed(3)).tolist()
    params = [SamplingParams(max_new_tokens=10, temperature=1.0, seed=s, ignore_eos=True) for s in (1, 2, 3)]
    busy = SamplingParams(max_new_tokens=150, temperature=0.0, ignore_eos=True)
    with Engine(model, tok, max_batch_size=5, prefill_chunk=8, prefix_cache_tokens=0) as eng:
        alone = [eng.generate_text(ids, p)[0] for p in params]
        for cancel_first in (False, True):
            eng.decoder = recorder = RecordingDecoder(eng.decoder)
            running: list = []
            eng.submit(ids[:5], busy, running.append)  # while it decodes, prompts prefill 8 tokens a step
            while eng.steps == 0 or not recorder.calls:
                time.sleep(0.001)
            sinks: list = []
            handles = _submit_group(eng, ids, params, object(), sinks)
            if cancel_first:
                handles[0].cancel()
            deadline = time.monotonic() + 60
            results = [_text_when_done(events, deadline) for events in sinks]
            _text_when_done(running, deadline)
            eng.decoder = recorder.inner
            prefilled = sum(sum(lengths) for kind, lengths in recorder.calls if kind == "prefill")
            if cancel_first:
                assert results[0][1].reason == "cancelled"
                assert [text for text, _ in results[1:]] == alone[1:]
                assert prefilled <= 5 + 2 * 30  # the cancelled one's tokens at most once more
            else:
                assert [text for text, _ in results] == alone
                assert prefilled == 5 + 30, recorder.calls  # the busy prompt, then the group's once


def test_a_conversation_resent_with_a_new_turn_prefills_only_the_new_tokens(model_and_tokenizer):
    """The prefix cache (on by default): a chat's second request, history + a new user turn, skips the
    tokens its first request's prompt shares with it, and the replies are what they are without it."""
    model, tok = model_and_tokenizer
    history = CASES["hello"].messages()
    first = encode_chat_prompt(tok, history)[1]
    turn = history + [
        {"role": "assistant", "content": CASES["hello"].content},
        *CASES["count"].messages(),
    ]
    second = encode_chat_prompt(tok, turn)[1]
    params = SamplingParams(max_new_tokens=40, temperature=0.0)
    with Engine(model, tok, prefix_cache_tokens=0) as plain:
        expected = [plain.generate_text(ids, params)[0] for ids in (first, second)]
    with Engine(model, tok) as eng:
        eng.decoder = recorder = RecordingDecoder(eng.decoder)
        got = [eng.generate_text(ids, params)[0] for ids in (first, second)]
        eng.decoder = recorder.inner
    assert got == expected and expected[0] == CASES["hello"].completion()
    prefilled = [sum(lengths) for kind, lengths in recorder.calls if kind == "prefill"]
    assert prefilled == [len(first), len(second) - len(first)]
    assert second[: len(first)] == first


def _reference_model(name: str, vocab_size: int):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    common = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    if name == "minimind-moe":
        from minimind_hf import MiniMindConfig, MiniMindForCausalLM

        config = MiniMindConfig.from_preset(
            "tiny", vocab_size=vocab_size, use_moe=True, max_position_embeddings=256
        )
        return MiniMindForCausalLM(config).eval()
    if name == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common)).eval()
    if name == "qwen2":  # biases on q/k/v (fused into one packed product)
        model = Qwen2ForCausalLM(Qwen2Config(**common)).eval()
        with torch.no_grad():  # transformers initialises biases to zero, which would test nothing
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
        return model
    return LlamaForCausalLM(LlamaConfig(**common)).eval()


@pytest.mark.parametrize("name", ["qwen3", "qwen2", "llama", "minimind-moe"])
def test_transformers_models_decode_like_their_own_forward(name, model_and_tokenizer):
    """The slot decoder runs transformers' own Qwen3 / Qwen2 / Llama classes and MiniMind's MoE block:
    greedy tokens equal their own forward's."""
    _, tok = model_and_tokenizer
    model = _reference_model(name, len(tok))
    jobs, expected = greedy_jobs(model, tok, (5, 31, 12, 20), seed=2, new_tokens=10)
    assert len(jobs) >= 3
    with Engine(model, tok, max_batch_size=2, prefill_chunk=8) as eng:
        assert [text for text, _ in run_concurrently(eng, jobs)] == expected


def test_unsupported_architecture_is_refused_by_name(model_and_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = model_and_tokenizer
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(ValueError, match="'gpt2'"):
        Engine(gpt2, tok)


@pytest.mark.slow
def test_llama_cpp_backend_serves_the_same_model(model_and_tokenizer, model_dir, tmp_path):
    """The llama.cpp decoder on the folder's f16 GGUF export: logits close to the model's own forward,
    the memorised replies, packed prefill and batching through the same engine."""
    pytest.importorskip("llama_cpp")
    from minimind_hf.convert import to_gguf

    from minimind_hf.serve.llama_backend import LlamaCppDecoder

    model, tok = model_and_tokenizer
    gguf = to_gguf(model_dir, tmp_path / "model-f16.gguf", outtype="f16")
    decoder = LlamaCppDecoder(gguf, slots=3, context_length=CONTEXT_FOR_LLAMA, threads=1)
    ids = encode_chat_prompt(tok, CASES["hello"].messages())[1]
    state = decoder.start_prefill(ids)
    got = decoder.prefill([(state, ids[:10]), ])  # fmt: skip
    with torch.no_grad():
        want = model(torch.tensor([ids[:10]])).logits[0, -1]
    assert torch.allclose(got[0], want, atol=0.05 * float(want.abs().max())), (got[0] - want).abs().max()
    decoder.discard(state)
    with Engine(model, tok, max_batch_size=3, prefill_chunk=7, context_length=CONTEXT_FOR_LLAMA,
                decoder=decoder) as eng:  # fmt: skip
        jobs = []
        for case in CASES.values():
            prompt = encode_chat_prompt(tok, case.messages(), list(case.tools), case.thinking)[1]
            jobs.append((prompt, SamplingParams(max_new_tokens=200, temperature=0.0)))
        results = run_concurrently(eng, jobs * 2)
        assert [text for text, _ in results] == [case.completion() for case in CASES.values()] * 2
        assert eng.max_rows_seen > 1
        # n choices sharing one prefill: the others get a copy of its llama.cpp sequence
        sinks: list = []
        _submit_group(eng, jobs[0][0], [jobs[0][1]] * 3, object(), sinks)
        deadline = time.monotonic() + 60
        texts = [_text_when_done(events, deadline)[0] for events in sinks]
        assert texts == [next(iter(CASES.values())).completion()] * 3
    decoder.close()


CONTEXT_FOR_LLAMA = 384
