"""Throughput of `minimind-hf serve` under 1, 4 and 16 concurrent streaming clients.

    python benchmarks/serve_throughput.py [--model DIR] [--requests 32] [--max-tokens 64] [--threads 1]

Without --model, a tokenizer is trained on the built-in demo corpus and a randomly initialised `tiny`
MiniMind (2 layers, hidden 64) is saved to a temporary folder: the numbers then measure the serving
stack (HTTP, SSE, batching, sampling, detokenization), not a useful model. The server runs as a separate
process on a free 127.0.0.1 port; every request streams `--max-tokens` tokens (`ignore_eos`) at
temperature 1 with a fixed seed. Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

logger = logging.getLogger("serve_throughput")


def build_tiny_model(out: Path, vocab_size: int = 1024) -> Path:
    import torch

    import minimind_hf  # noqa: F401
    from minimind_hf import MiniMindConfig, MiniMindForCausalLM
    from minimind_hf.data.demo_corpus import pretrain_texts
    from minimind_hf.tokenizer import train_tokenizer

    tok = train_tokenizer(pretrain_texts(400), vocab_size=vocab_size, show_progress=False)
    torch.manual_seed(0)
    model = MiniMindForCausalLM(
        MiniMindConfig.from_preset("tiny", vocab_size=len(tok), max_position_embeddings=2048)
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(client: httpx.AsyncClient, url: str, model: str, i: int, max_tokens: int) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "seed": i,
        "ignore_eos": True,
    }
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return {"latency": time.perf_counter() - start, "ttft": first or 0.0, "tokens": tokens}


async def run_level(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    results: list[dict] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await one_request(client, url, model, i, max_tokens))

    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "seconds": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "mean_ttft_s": round(statistics.mean(r["ttft"] for r in results), 4),
        "p50_latency_s": round(statistics.median(r["latency"] for r in results), 4),
        "completion_tokens": tokens,
    }


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url + "/health", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError("server did not start in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="model folder (default: a random tiny model built here)"
    )
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server (default 1)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else build_tiny_model(Path(tmp) / "tiny")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "minimind_hf.serve.cli",
            "serve",
            str(model_dir),
            "--port",
            str(port),
            "--threads",
            str(args.threads),
            "--max-batch-size",
            str(args.max_batch_size),
            "--model-name",
            "bench",
        ]
        log = open(Path(tmp) / "server.log", "w")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            wait_ready(url, proc)
            asyncio.run(run_level(url, "bench", 1, 2, 8))  # warm-up
            rows = []
            for level in (int(x) for x in args.levels.split(",")):
                logger.info("concurrency %d: %d requests x %d tokens", level, args.requests, args.max_tokens)
                rows.append(asyncio.run(run_level(url, "bench", level, args.requests, args.max_tokens)))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

    print(
        f"{'clients':>7} {'requests':>8} {'seconds':>8} {'req/s':>7} {'tok/s':>8} {'ttft s':>7} {'p50 s':>7}"
    )
    for r in rows:
        print(
            f"{r['concurrency']:>7} {r['requests']:>8} {r['seconds']:>8.2f} {r['requests_per_s']:>7.2f} "
            f"{r['tokens_per_s']:>8.1f} {r['mean_ttft_s']:>7.3f} {r['p50_latency_s']:>7.3f}"
        )
    base = rows[0]["tokens_per_s"] or 1.0
    summary = {
        "benchmark": "serve_throughput",
        "model": "random tiny" if not args.model else str(args.model),
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "cpu_load_1m": round(os.getloadavg()[0], 2),
        "levels": rows,
        "speedup_vs_1_client": {str(r["concurrency"]): round(r["tokens_per_s"] / base, 2) for r in rows},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
