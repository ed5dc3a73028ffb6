"""Greedy decode throughput: MiniMind through `generate` vs transformers' Qwen3 with the same weights, and
llama.cpp on the f16 and q8_0 GGUF exports. Same prompt, batch 1 and 8, one timed run each (after a short
warm-up); new tokens per second = batch * new tokens / wall time (prefill included, for every engine).

    .venv/bin/python benchmarks/decode_throughput.py                      # minimind3 (63.9M), random weights
    .venv/bin/python benchmarks/decode_throughput.py --model runs/quickstart/model --new-tokens 128

Prints one line per engine and batch size, the ratios, and as the last line a JSON summary.
On a shared, busy machine pass `--threads 1`: two threads contending with other jobs made every engine
several times slower and the ratios meaningless (measured here).
Goal: MiniMind / Qwen3 >= 1.0 (it is the same computation; the ratio shows our overhead).
llama.cpp rows need `llama_cpp` (llama-cpp-python); they are skipped with a note otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PROMPT = "问：小明有 3 个苹果，又买了 5 个，现在一共有几个苹果？\n答：小明原来有 3 个苹果"


def _tokenizer(model_dir: str | None, vocab_size: int):
    from transformers import AutoTokenizer

    if model_dir and (Path(model_dir) / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(model_dir)
    from minimind_hf.data.demo_corpus import pretrain_texts
    from minimind_hf.tokenizer import train_tokenizer

    # The generated demo corpus supports ~2.4k merges; the GGUF pads the vocabulary up to the model's size.
    return train_tokenizer(
        pretrain_texts(4000, seed=0), vocab_size=min(vocab_size, 2048), show_progress=False
    )


def _timed_generate(model, ids: torch.Tensor, new_tokens: int) -> float:
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        t0 = time.perf_counter()
        out = model.generate(ids, **kw)
        elapsed = time.perf_counter() - t0
    assert out.shape[1] == ids.shape[1] + new_tokens
    return ids.shape[0] * new_tokens / elapsed


def _silent_callback():
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp.llama_log_callback(lambda level, text, user_data: None)


_SILENT = _silent_callback()


class LlamaCppGreedy:
    """Batched greedy decoding through llama.cpp's C API (one sequence id per batch row)."""

    def __init__(self, path: Path, batch: int, n_ctx_per_seq: int, threads: int):
        import llama_cpp as L

        self.L = L
        L.llama_log_set(_SILENT, ctypes.c_void_p(0))  # llama.cpp logs every context creation otherwise
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(path).encode(), mparams)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = batch * n_ctx_per_seq
        cparams.n_batch = batch * n_ctx_per_seq
        cparams.n_ubatch = batch * n_ctx_per_seq
        cparams.n_seq_max = batch
        cparams.n_threads = cparams.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, cparams)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(batch * n_ctx_per_seq, 0, batch)
        self.rows = batch

    def _decode(self, entries):  # entries: (token, pos, seq, want_logits)
        b = self.batch
        b.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        if self.L.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def _argmax(self, i: int) -> int:
        ptr = self.L.llama_get_logits_ith(self.ctx, i)
        return int(
            np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (self.n_vocab,)).argmax()
        )

    def generate(self, prompt: list[int], new_tokens: int) -> list[list[int]]:
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)
        n = len(prompt)
        self._decode([(t, p, s, p == n - 1) for s in range(self.rows) for p, t in enumerate(prompt)])
        last = [s * n + n - 1 for s in range(self.rows)]
        out = [[] for _ in range(self.rows)]
        for step in range(new_tokens):
            toks = [self._argmax(i) for i in last]
            for s, t in enumerate(toks):
                out[s].append(t)
            if step == new_tokens - 1:
                break
            self._decode([(t, n + step, s, True) for s, t in enumerate(toks)])
            last = list(range(self.rows))
        return out

    def close(self):
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


def _llama_rate(
    path: Path, prompt: list[int], batch: int, new_tokens: int, threads: int
) -> tuple[float, list[int]]:
    engine = LlamaCppGreedy(path, batch, len(prompt) + new_tokens + 8, threads)
    try:
        engine.generate(prompt, 4)  # warm-up
        t0 = time.perf_counter()
        out = engine.generate(prompt, new_tokens)
        elapsed = time.perf_counter() - t0
    finally:
        engine.close()
    return batch * new_tokens / elapsed, out[0]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="minimind3")
    parser.add_argument(
        "--model", default=None, help="a MiniMind folder (default: random weights of --preset)"
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-llama-cpp", action="store_true")
    return parser.parse_args(argv)


def _load_models(args: argparse.Namespace, work: Path):
    """MiniMind (loaded from --model or random --preset weights saved under `work`), the same weights as a
    transformers Qwen3, the MiniMind folder and the prompt's token ids."""
    from minimind_hf.convert import to_qwen3
    from transformers import AutoModelForCausalLM

    from minimind_hf import MiniMindConfig, MiniMindForCausalLM

    if args.model:
        src = Path(args.model)
        ours = MiniMindForCausalLM.from_pretrained(src, dtype=torch.float32)
    else:
        ours = MiniMindForCausalLM(MiniMindConfig.from_preset(args.preset))
        src = work / "minimind"
        ours.save_pretrained(src)
    tokenizer = _tokenizer(args.model, ours.config.vocab_size)
    if not (src / "tokenizer.json").is_file():
        tokenizer.save_pretrained(src)
    ours.eval()
    qwen = AutoModelForCausalLM.from_pretrained(to_qwen3(src, work / "qwen3"), dtype=torch.float32).eval()
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    return ours, qwen, src, prompt


def _transformers_rates(ours, qwen, prompt: list[int], args: argparse.Namespace) -> dict[str, float]:
    results: dict[str, float] = {}
    for b in args.batches:
        ids = torch.tensor([prompt] * b)
        results[f"minimind_b{b}"] = _timed_generate(ours, ids, args.new_tokens)
        results[f"qwen3_b{b}"] = _timed_generate(qwen, ids, args.new_tokens)
        print(
            f"batch {b}: minimind {results[f'minimind_b{b}']:.1f} tok/s, "
            f"transformers {type(qwen).__name__} {results[f'qwen3_b{b}']:.1f} tok/s"
        )
    return results


def _llama_cpp_rates(
    ours, src: Path, work: Path, prompt: list[int], args: argparse.Namespace, results: dict[str, float]
) -> str | None:
    """Adds the llama.cpp rates of the f16 and q8_0 exports to `results`; returns a note when it cannot."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama_cpp not installed"
    from minimind_hf.convert import to_gguf

    with torch.no_grad():
        ref_tokens = ours.generate(
            torch.tensor([prompt]),
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
        )[0, len(prompt) :].tolist()
    for outtype in ("f16", "q8_0"):
        path = to_gguf(src, work / f"model-{outtype}.gguf", outtype=outtype)
        for b in args.batches:
            rate, first = _llama_rate(path, prompt, b, args.new_tokens, args.threads)
            results[f"llamacpp_{outtype}_b{b}"] = rate
            same = sum(x == y for x, y in zip(first, ref_tokens, strict=True))
            print(
                f"batch {b}: llama.cpp {outtype} {rate:.1f} tok/s "
                f"({same}/{args.new_tokens} greedy tokens equal to transformers)"
            )
    return None


def _ratios(results: dict[str, float], batches: list[int]) -> dict[str, float]:
    ratios = {}
    for b in batches:
        ratios[f"minimind_vs_qwen3_b{b}"] = results[f"minimind_b{b}"] / results[f"qwen3_b{b}"]
        for outtype in ("f16", "q8_0"):
            key = f"llamacpp_{outtype}_b{b}"
            if key in results:
                ratios[f"llamacpp_{outtype}_vs_minimind_b{b}"] = results[key] / results[f"minimind_b{b}"]
    return ratios


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="decode-bench-"))
    ours, qwen, src, prompt = _load_models(args, work)
    n_params = sum(p.numel() for p in ours.parameters())
    print(
        f"model: {args.model or args.preset} ({n_params / 1e6:.1f}M params, {type(qwen).__name__} "
        f"reference), prompt {len(prompt)} tokens, {args.new_tokens} new tokens, {args.threads} threads"
    )

    results = _transformers_rates(ours, qwen, prompt, args)
    llama_note = None if args.no_llama_cpp else _llama_cpp_rates(ours, src, work, prompt, args, results)
    ratios = _ratios(results, args.batches)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    summary = {
        "benchmark": "decode_throughput",
        "model": args.model or args.preset,
        "params": n_params,
        "prompt_tokens": len(prompt),
        "new_tokens": args.new_tokens,
        "threads": args.threads,
        "tokens_per_s": {k: round(v, 2) for k, v in results.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "goal_minimind_vs_qwen3": ">= 1.0",
    }
    if llama_note:
        summary["llama_cpp"] = llama_note
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
