"""to-gguf, verified by llama.cpp itself (llama-cpp-python built from its PyPI source distribution).

- f32 with an f32 KV cache: max abs logit diff vs transformers < 1e-3 (dense / MoE / llama-shaped / YaRN);
- f16 and bf16: the same greedy 32-token continuation as transformers;
- q8_0 on a briefly trained model: top-1 agreement with transformers on a long held-out text > 95%;
- llama.cpp's tokenisation = ours on Chinese, English, emoji, code, whitespace and the reserved tokens;
- the chat template embedded in the GGUF renders in llama-cpp-python's chat handler exactly as in
  transformers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from convert_helpers import load_minimind
from minimind_hf.convert import to_gguf

from minimind_hf import MiniMindConfig, MiniMindForCausalLM

llama_cpp = pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed; CI builds it with "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" pip install llama-cpp-python',
)
gguf = pytest.importorskip("gguf")
from transformers import AutoTokenizer  # noqa: E402

pytestmark = pytest.mark.slow  # llama.cpp

N_CTX = 1024


@pytest.fixture(scope="module")
def gguf_file(trained, tmp_path_factory):
    """(kind, outtype) -> path of the exported GGUF, built once per module."""
    cache = {}
    root = tmp_path_factory.mktemp("gguf")

    def get(kind: str, outtype: str):
        if (kind, outtype) not in cache:
            cache[kind, outtype] = to_gguf(trained[kind], root / f"{kind}-{outtype}.gguf", outtype=outtype)
        return cache[kind, outtype]

    return get


def open_llama(path, f32_cache: bool = False):
    kwargs = dict(type_k=0, type_v=0) if f32_cache else {}  # 0 = GGML_TYPE_F32
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=N_CTX,
        n_batch=N_CTX,
        n_ubatch=N_CTX,
        n_threads=2,
        logits_all=True,
        verbose=False,
        **kwargs,
    )


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def greedy_llama(llm, prompt: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out


def greedy_hf(model, prompt: list[int], n: int) -> list[int]:
    """Plain argmax loop with the KV cache (no eos stopping or logits processors, like the loop above)."""
    out = []
    with torch.no_grad():
        step = model(torch.tensor([prompt]), use_cache=True)
        for _ in range(n):
            out.append(int(step.logits[0, -1].argmax()))
            step = model(torch.tensor([[out[-1]]]), cache=step.cache, use_cache=True)
    return out


def prompt_ids(tokenizer, text: str, limit: int) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"][:limit]


# ------------------------------------------------------------------------------------------- logits


@pytest.mark.parametrize("kind", ["dense", "moe", "noqk"])
def test_f32_logits_match_transformers(kind, trained, gguf_file, tokenizer, eval_text):
    path = gguf_file(kind, "f32")
    arch = {"dense": "qwen3", "moe": "qwen3moe", "noqk": "llama"}[kind]
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == arch
    assert "output.weight" not in {t.name for t in reader.tensors}, "tied embeddings: no output tensor"

    ids = prompt_ids(tokenizer, eval_text, 200)
    llm = open_llama(path, f32_cache=True)
    diff = float(np.abs(llama_logits(llm, ids) - hf_logits(load_minimind(trained[kind]), ids)).max())
    print(f"{kind} f32: max abs logit diff vs transformers {diff:.2e}")
    assert diff < 1e-3, f"{kind}: llama.cpp f32 vs transformers max abs diff {diff:.2e}"


def test_yarn_f32_logits_match_transformers(trained, tokenizer, eval_text, tmp_path):
    """MiniMind's YaRN (factor 16, attention factor 1.0) computes the same in llama.cpp."""
    cfg = MiniMindConfig.from_pretrained(trained["dense"])
    fields = {k: v for k, v in cfg.to_dict().items() if k in MiniMindConfig.__dataclass_fields__}
    fields.update(inference_rope_scaling=True, rope_parameters=None)
    yarn_cfg = MiniMindConfig(**fields)
    model = MiniMindForCausalLM.from_pretrained(trained["dense"], config=yarn_cfg).eval()
    model.save_pretrained(tmp_path / "yarn")
    tokenizer.save_pretrained(tmp_path / "yarn")
    path = to_gguf(tmp_path / "yarn", tmp_path / "yarn.gguf", outtype="f32")
    ids = prompt_ids(tokenizer, eval_text, 300)
    ours = hf_logits(model, ids)
    plain = hf_logits(load_minimind(trained["dense"]), ids)
    assert np.abs(ours - plain).max() > 1e-2, "YaRN should change the logits"
    diff = float(np.abs(llama_logits(open_llama(path, f32_cache=True), ids) - ours).max())
    print(f"yarn f32: max abs logit diff vs transformers {diff:.2e}")
    assert diff < 1e-3, f"YaRN: llama.cpp vs transformers max abs diff {diff:.2e}"


@pytest.mark.parametrize("case", ["qwen3moe-top1", "llama-moe-top2"])
def test_routing_variants_f32(case, tokenizer_dir, tokenizer, tmp_path, eval_text):
    """minimind3-moe's routing (top-1, weight exactly 1.0) and a MoE without q/k norm (GGUF arch llama with
    experts): llama.cpp's renormalised top-k agrees. f32 files, so random weights are fine here."""
    qk_norm, top_k = (True, 1) if case == "qwen3moe-top1" else (False, 2)
    torch.manual_seed(0)
    cfg = MiniMindConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        use_moe=True,
        num_experts=4,
        num_experts_per_tok=top_k,
        moe_intermediate_size=96,
        use_qk_norm=qk_norm,
    )
    model = MiniMindForCausalLM(cfg).eval()
    with torch.no_grad():  # a router with clear preferences, so top-k ties cannot flip
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "m")
    path = to_gguf(tmp_path / "m", tmp_path / "m.gguf", outtype="f32", tokenizer=tokenizer_dir)
    assert gguf.GGUFReader(path).fields["general.architecture"].contents() == case.split("-")[0]
    ids = prompt_ids(tokenizer, eval_text, 120)
    diff = float(np.abs(llama_logits(open_llama(path, f32_cache=True), ids) - hf_logits(model, ids)).max())
    assert diff < 1e-3, f"{case}: max abs diff {diff:.2e}"


@pytest.mark.parametrize(
    "kind,outtype", [("dense", "f16"), ("moe", "f16"), ("noqk", "f16"), ("dense", "bf16")]
)
def test_half_precision_greedy_continuation(kind, outtype, trained, gguf_file, tokenizer):
    prompt = prompt_ids(tokenizer, "问：小明有 3 个苹果，又买了 5 个，现在有几个？\n答：", 64)
    model, llm = load_minimind(trained[kind]), open_llama(gguf_file(kind, outtype))
    diff = float(np.abs(llama_logits(llm, prompt) - hf_logits(model, prompt)).max())
    print(f"{kind} {outtype}: max abs logit diff on the prompt {diff:.2e}")
    expected = greedy_hf(model, prompt, 32)
    got = greedy_llama(llm, prompt, 32)
    assert got == expected, (
        f"{kind} {outtype}:\n llama.cpp {tokenizer.decode(got)!r}\n"
        f" transformers {tokenizer.decode(expected)!r}"
    )


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_q8_0_top1_agreement_on_trained_model(kind, trained, gguf_file, tokenizer, eval_text):
    path = gguf_file(kind, "q8_0")
    types = {t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert "Q8_0" in types
    ids = prompt_ids(tokenizer, eval_text, 512)
    assert len(ids) >= 400
    ref = hf_logits(load_minimind(trained[kind]), ids)
    got = llama_logits(open_llama(path), ids)
    agreement = float((ref.argmax(-1) == got.argmax(-1)).mean())
    print(
        f"{kind} q8_0: top-1 agreement {agreement:.4f} over {len(ids)} tokens, "
        f"max abs diff {np.abs(ref - got).max():.3f}"
    )
    assert agreement > 0.95, f"{kind} q8_0: top-1 agreement {agreement:.3f}"


# ------------------------------------------------------------------------------------------ tokenizer

TOKENIZER_TEXTS = [
    "人工智能是计算机科学的一个分支，它试图理解智能的本质。",
    "The quick brown fox jumps over the lazy dog. It's 3.14159, isn't it?",
    "Emoji 😀🚀👍🏽 ❤️‍🔥 🇨🇳 and 中文表情😂！",
    'def add(a, b):\n    return a + b\n\n\tif x >= 10:  # comment\n        print(f"{x!r}")\n',
    "   leading spaces, trailing spaces   \n\n\n  multiple\r\nlines  ",
    "<|im_start|>system\nYou are MiniMind.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
    "<|im_start|>assistant\n",
    '<think>\n推理过程\n</think>\n\n答案<tool_call>\n{"name": "f"}\n</tool_call><|endoftext|><|buffer3|>',
    "12345678901234567890 1+1=2 ¥100 €5 ½ Ω",
    "Ünïcödé ñ café naïve résumé; Русский текст; العربية; 日本語のテキスト",
]


def test_tokenization_matches_transformers(trained, gguf_file):
    hf = AutoTokenizer.from_pretrained(trained["dense"])
    llm = llama_cpp.Llama(model_path=str(gguf_file("dense", "f16")), vocab_only=True, verbose=False)
    for text in TOKENIZER_TEXTS:
        ours = hf(text, add_special_tokens=False)["input_ids"]
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert theirs == ours, f"{text!r}:\n llama.cpp {theirs}\n transformers {ours}"
        assert llm.detokenize(theirs, special=True).decode("utf-8") == hf.decode(ours) == text


def test_digit_splitting_tokenizer_exports_as_qwen2_and_tokenizes_like_llama_cpp(tmp_path):
    """train_tokenizer(split_digits=True) uses Qwen2's regex: the export declares llama.cpp's `qwen2`
    pre-tokenizer and llama.cpp then splits every text (digits one by one) exactly like transformers."""
    from minimind_hf.data.demo_corpus import pretrain_texts
    from minimind_hf.tokenizer import train_tokenizer

    tok = train_tokenizer(
        pretrain_texts(800) + TOKENIZER_TEXTS * 10, vocab_size=700, show_progress=False, split_digits=True
    )
    assert [tok.decode([i]) for i in tok(" 2024", add_special_tokens=False)["input_ids"]] == [
        " ",
        "2",
        "0",
        "2",
        "4",
    ]
    src = tmp_path / "model"
    MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=len(tok))).save_pretrained(src)
    tok.save_pretrained(src)
    out = to_gguf(src, tmp_path / "m.gguf", outtype="f16")
    reader = gguf.GGUFReader(str(out))
    field = reader.fields["tokenizer.ggml.pre"]
    assert bytes(field.parts[field.data[0]]).decode() == "qwen2"
    llm = llama_cpp.Llama(model_path=str(out), vocab_only=True, verbose=False)
    for text in TOKENIZER_TEXTS:
        ours = tok(text, add_special_tokens=False)["input_ids"]
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert theirs == ours, f"{text!r}:\n llama.cpp {theirs}\n transformers {ours}"


# ------------------------------------------------------------------------------------------ chat template

CONVERSATIONS = {
    "user": [{"role": "user", "content": "你好，请介绍一下你自己。"}],
    "system": [{"role": "system", "content": "You are MiniMind."}, {"role": "user", "content": "Hi!"}],
    "multi-turn-reasoning": [
        {"role": "user", "content": "1+1=?"},
        {"role": "assistant", "content": "2", "reasoning_content": "one plus one is two"},
        {"role": "user", "content": "And 2+2?"},
    ],
    "tool-call": [
        {"role": "user", "content": "Weather in Beijing?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Beijing"}}}
            ],
        },
        {"role": "tool", "content": '{"temp": 20}'},
        {"role": "tool", "content": '{"sky": "clear"}'},
    ],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


class _Captured(Exception):
    pass


@pytest.mark.parametrize("name", [*CONVERSATIONS, "tools"])
def test_embedded_chat_template_renders_like_transformers(name, trained, gguf_file):
    """`Llama.create_chat_completion` with the handler llama-cpp-python built from the GGUF's template: the
    prompt it tokenises (and the tokens) equal transformers' `apply_chat_template`."""
    messages = CONVERSATIONS.get(name, CONVERSATIONS["user"])
    tools = TOOLS if name == "tools" else None
    hf = AutoTokenizer.from_pretrained(trained["dense"])
    expected = hf.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    expected_ids = hf.apply_chat_template(
        messages, tools=tools, tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]

    llm = llama_cpp.Llama(model_path=str(gguf_file("dense", "f16")), vocab_only=True, verbose=False)
    assert llm.chat_format == "chat_template.default", (
        "llama-cpp-python did not pick up the embedded template"
    )
    real_tokenize = llm.tokenize
    seen = {}

    def capture(text: bytes, add_bos: bool = True, special: bool = False):
        seen["ids"] = real_tokenize(text, add_bos=add_bos, special=special)
        seen["prompt"] = text.decode("utf-8")
        raise _Captured  # stop before generating

    llm.tokenize = capture
    with pytest.raises(_Captured):
        llm.create_chat_completion(messages=messages, tools=tools, max_tokens=1)
    assert seen["prompt"] == expected
    assert seen["ids"] == expected_ids  # no BOS prepended: add_bos_token=false is in the GGUF
