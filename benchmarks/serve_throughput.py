"""`minimind-hf serve` against llama-cpp-python's own server, on the same weights, in the same run.

    python benchmarks/serve_throughput.py                       # minimind3 (63.9M), random weights, 1 thread
    python benchmarks/serve_throughput.py --model runs/quickstart/model --threads 2
    python benchmarks/serve_throughput.py --serve-args="--dtype float32"   # a serving option of ours

Without --model, a tokenizer is trained on the built-in demo corpus and a random `--preset` MiniMind is
saved to a temporary folder (the figures then measure the serving stack and the decoder, not a useful
model). Its f16 GGUF export (`minimind_hf.convert.to_gguf`) is what llama.cpp serves. Each server is a
separate process on a free 127.0.0.1 port, with the same thread count. Both are started, then measured in
turn (never at the same time), level by level, for `--rounds` rounds, so that a drift in the machine's
speed falls on both instead of on whichever ran at the time; the figures are the rounds' totals, with each
round's tokens/s beside them. Every request is the
same chat prompt, greedy, `--max-tokens` new tokens (EOS suppressed: `ignore_eos` for ours, a -100
`logit_bias` on EOS for llama.cpp), streamed over SSE and counted from the stream.

Measured per server:
- ``bs1``: one client, requests one after another: tokens/s (time to first token included);
- ``bs8``: eight concurrent clients: aggregate tokens/s (llama-cpp-python's server queues them);
- ours only, ``stall``: while one stream is decoding, a `--long-prompt`-token request arrives; the largest
  gap between two of the running stream's tokens, against its median gap (chunked prefill keeps it small),
  and the long request's latency for one token against `--long-prompt` / the short prompt's (prefill cost
  is proportional to a prompt's own tokens when nothing is padded).

Each level also records the server process's CPU time (user + system, every thread, from /proc), so a
server that keeps a second core busy is charged for it: ``bs1_vs_llamacpp_per_core`` is the ratio of
tokens per CPU-second, ``bs1_vs_llamacpp`` the plain tokens/s ratio.

Goals (issue 12): ``bs1_vs_llamacpp_per_core`` >= 0.5 and ``bs8_vs_llamacpp_server`` >= 2. The last line
printed is JSON with both ratios, the raw tokens/s, the cores used and the threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

logger = logging.getLogger("serve_throughput")

PROMPT = "小明有 3 个苹果，又买了 5 个，现在一共有几个苹果？请一步一步地算出来，并说明理由。"


def build_model(out: Path, preset: str) -> Path:
    import torch

    from minimind_hf import MiniMindConfig, MiniMindForCausalLM
    from minimind_hf.data.demo_corpus import pretrain_texts
    from minimind_hf.tokenizer import train_tokenizer

    # The demo corpus supports ~2.4k merges; the model keeps its preset's vocabulary (the GGUF pads up to it).
    tok = train_tokenizer(pretrain_texts(4000, seed=0), vocab_size=2048, show_progress=False)
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig.from_preset(preset, max_position_embeddings=4096))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_body(content: str, max_tokens: int, extra: dict) -> dict:
    return {
        "model": "bench",
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0.0,
        **extra,
    }


async def one_request(client: httpx.AsyncClient, url: str, body: dict, on_token=None) -> dict:
    """Stream one request. Completion tokens: the usage chunk where the server sends one, else
    ``max_tokens`` when it stopped for length (EOS is suppressed, so nothing else ends a reply early)."""
    start = time.perf_counter()
    stamps: list[float] = []  # arrival of text chunks (a chunk can hold several tokens' bytes)
    tokens, reason = None, None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            choice = chunk["choices"][0] if chunk.get("choices") else {}
            reason = choice.get("finish_reason") or reason
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning_content"):
                stamps.append(time.perf_counter())
                if on_token is not None:
                    on_token(len(stamps))
    if tokens is None:
        if reason != "length":
            raise RuntimeError(f"cannot count the tokens of a reply that ended with {reason!r}")
        tokens = body["max_tokens"]
    return {"start": start, "stamps": stamps, "latency": time.perf_counter() - start, "tokens": tokens}


async def run_level(url: str, body: dict, clients: int, requests: int) -> dict:
    pending = list(range(requests))
    results: list[dict] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while pending:
            pending.pop()
            results.append(await one_request(client, url, body))

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 2)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "seconds": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "mean_ttft_s": round(statistics.mean(r["stamps"][0] - r["start"] for r in results if r["stamps"]), 4),
        "completion_tokens": tokens,
    }


def measure_stall(serve_argv: list[str], prompt: list[int], long_prompt: list[int]) -> dict:
    """In-process, on the engine the server builds from ``serve_argv`` (a random model's text arrives in
    irregular chunks, its decoding steps do not): while one request decodes, a long prompt arrives; the
    gaps between the running request's steps, and the long prompt's latency to one token."""
    import threading

    from minimind_hf.cli import build_parser
    from minimind_hf.serve.cli import _engine
    from minimind_hf.serve.sampling import SamplingParams

    engine = _engine(build_parser().parse_args(serve_argv))
    if engine is None:
        raise RuntimeError(f"serve {' '.join(serve_argv)}: the engine could not be built (see the log)")
    engine.start()
    steps: list[float] = []
    decode = engine.decoder.decode

    def timed_decode(*args):
        out = decode(*args)
        steps.append(time.perf_counter())
        return out

    engine.decoder.decode = timed_decode
    one = SamplingParams(max_new_tokens=1, temperature=0.0, ignore_eos=True)

    def latency(ids: list[int]) -> float:
        start = time.perf_counter()
        engine.generate_text(ids, one)
        return time.perf_counter() - start

    try:
        latency(prompt)  # warm-up
        short, long_alone = latency(prompt), latency(long_prompt)
        steps.clear()
        running = threading.Thread(
            target=engine.generate_text,
            args=(prompt, SamplingParams(max_new_tokens=64, temperature=0.0, ignore_eos=True)),
        )
        running.start()
        while len(steps) < 8:
            time.sleep(0.001)
        long_during = latency(long_prompt)
        running.join()
    finally:
        engine.shutdown()
    gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    return {
        "prefill_chunk": engine.prefill_chunk,
        "stream_max_step_gap_s": round(max(gaps), 4),
        "stream_median_step_gap_s": round(statistics.median(gaps), 4),
        "long_prompt_tokens": len(long_prompt),
        "short_prompt_tokens": len(prompt),
        "long_prompt_latency_s": round(long_alone, 4),  # prefill + one token
        "long_prompt_latency_during_stream_s": round(long_during, 4),
        "short_prompt_latency_s": round(short, 4),
    }


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            httpx.get(url + "/v1/models", timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError("server did not start in time")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used: what "per core used" divides by."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(cmd: list[str], port: int, log: Path, threads: int):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, log)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


LEVELS = (("bs1", 1), ("bs8", 8))  # (name, concurrent clients)


def measure_level(url: str, pid: int, body: dict, clients: int, requests: int) -> dict:
    cpu = cpu_seconds(pid)
    level = asyncio.run(run_level(url, body, clients, requests))
    # the server's own CPU time: a server that keeps a second core busy (its HTTP thread beside the
    # decoding one) is charged for it
    level["cpu_s"] = cpu_seconds(pid) - cpu
    return level


def combine(runs: list[dict]) -> dict:
    """One level's rounds: totals, and each round's tokens/s."""
    tokens = sum(r["completion_tokens"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    return {
        "clients": runs[0]["clients"],
        "requests": sum(r["requests"] for r in runs),
        "seconds": round(seconds, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2),
        "tokens_per_s_by_round": [r["tokens_per_s"] for r in runs],
        "mean_ttft_s": round(statistics.mean(r["mean_ttft_s"] for r in runs), 4),
        "cpu_s": round(cpu, 3),
        "cores_used": round(cpu / seconds, 2),
        "tokens_per_cpu_s": round(tokens / cpu, 2),
    }


def bench_servers(servers: dict[str, tuple[list[str], dict]], tmp: Path, args: argparse.Namespace) -> dict:
    """Start every server, then measure them in turn, level by level, ``--rounds`` times: a machine whose
    speed drifts (a busy neighbour) slows all of them alike instead of whichever happened to run then."""
    runs: dict[str, dict[str, list]] = {name: {level: [] for level, _ in LEVELS} for name in servers}
    with ExitStack() as stack:
        running = {}
        for name, (cmd, _) in servers.items():
            logger.info("%s: %s", name, " ".join(cmd[2:]))
            port = int(cmd[cmd.index("--port") + 1])
            log = tmp / f"{name.split()[0]}.log"
            running[name] = stack.enter_context(server(cmd, port, log, args.threads))
        for name, (url, _) in running.items():  # warm-up
            asyncio.run(run_level(url, {**servers[name][1], "max_tokens": 8}, 1, 2))
        for round_ in range(args.rounds):
            for level, clients in LEVELS:
                for name, (url, pid) in running.items():
                    requests = clients * args.requests
                    logger.info(
                        "round %d, %s %s: %d requests, %d clients", round_ + 1, name, level, requests, clients
                    )
                    runs[name][level].append(measure_level(url, pid, servers[name][1], clients, requests))
    return {name: {level: combine(r) for level, r in levels.items()} for name, levels in runs.items()}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a MiniMind folder (default: random --preset weights)")
    parser.add_argument("--preset", default="minimind3")
    parser.add_argument("--requests", type=int, default=2, help="requests per client per level and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every level on every server")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="threads of each server (default 1)")
    parser.add_argument(
        "--long-prompt", type=int, default=1200, help="tokens of the stall test's long prompt"
    )
    parser.add_argument("--serve-args", default="", help="extra arguments for `minimind-hf serve`")
    parser.add_argument("--no-llama-cpp", action="store_true", help="measure our server only")
    return parser.parse_args(argv)


def stall_prompts(tokenizer, long_tokens: int) -> tuple[list[int], list[int]]:
    """The short prompt's ids and a long prompt's of about `long_tokens` tokens: the short one repeated."""
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    long_text = "\n".join([PROMPT] * max(1, long_tokens // len(ids)))
    return ids, tokenizer(long_text, add_special_tokens=False)["input_ids"]


def ours_command(model_dir: Path, args: argparse.Namespace) -> tuple[list[str], dict]:
    cmd = [
        sys.executable, "-m", "minimind_hf.cli", "serve", str(model_dir),
        "--port", str(free_port()), "--threads", str(args.threads), "--model-name", "bench",
        *shlex.split(args.serve_args),
    ]  # fmt: skip
    return cmd, request_body(PROMPT, args.max_tokens, {"ignore_eos": True})


def llama_cpp_command(
    model_dir: Path, tmp: Path, eos: int, args: argparse.Namespace
) -> tuple[tuple[list[str], dict] | None, str | None]:
    """llama-cpp-python's server on the f16 GGUF export, or None and why it cannot run."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        return None, f"llama-cpp-python server not installed ({exc.name})"
    from minimind_hf.convert import to_gguf

    gguf = to_gguf(model_dir, tmp / "model-f16.gguf", outtype="f16", force=True)
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(free_port()),
        "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
        "--n_ctx", "4096", "--verbose", "False", "--model_alias", "bench",
        "--interrupt_requests", "False",  # queue concurrent requests instead of cutting them off
    ]  # fmt: skip
    return (cmd, request_body(PROMPT, args.max_tokens, {"logit_bias": {str(eos): -100}})), None


def print_report(results: dict[str, dict], stall: dict) -> None:
    print(
        f"{'server':<14} {'level':<5} {'requests':>8} {'seconds':>8} {'tok/s':>8} {'ttft s':>7} "
        f"{'cores':>6} {'tok/cpu-s':>9}"
    )
    for name, res in results.items():
        for level in ("bs1", "bs8"):
            r = res[level]
            print(
                f"{name:<14} {level:<5} {r['requests']:>8} {r['seconds']:>8.2f} {r['tokens_per_s']:>8.1f} "
                f"{r['mean_ttft_s']:>7.3f} {r['cores_used']:>6.2f} {r['tokens_per_cpu_s']:>9.1f}"
            )
    print(
        f"engine, a {stall['long_prompt_tokens']}-token prompt arriving mid-stream (prefill chunk "
        f"{stall['prefill_chunk']}): the stream's largest step gap {stall['stream_max_step_gap_s']:.3f} s "
        f"(median {stall['stream_median_step_gap_s']:.3f} s); one token after it in "
        f"{stall['long_prompt_latency_s']:.3f} s alone, {stall['long_prompt_latency_during_stream_s']:.3f} s "
        f"beside the stream, {stall['short_prompt_latency_s']:.3f} s after the "
        f"{stall['short_prompt_tokens']}-token prompt"
    )


def summarize(
    args: argparse.Namespace, results: dict[str, dict], stall: dict, llama_note: str | None
) -> dict:
    summary: dict = {
        "benchmark": "serve_throughput",
        "model": str(args.model) if args.model else f"random {args.preset}",
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "serve_args": args.serve_args,
        "cpu_load_1m": round(os.getloadavg()[0], 2),
        "tokens_per_s": {
            f"{n} {lvl}": res[lvl]["tokens_per_s"] for n, res in results.items() for lvl in ("bs1", "bs8")
        },
        "stall": stall,
    }  # fmt: skip
    if "llama.cpp f16" in results:
        ours, llama = results["ours"], results["llama.cpp f16"]

        def ratio(level: str, key: str) -> float:
            return round(ours[level][key] / llama[level][key], 3)

        # per core used: tokens per CPU-second of each server process (both get the same thread count,
        # but either may keep more than one core busy)
        summary["bs1_vs_llamacpp_per_core"] = ratio("bs1", "tokens_per_cpu_s")
        summary["bs1_vs_llamacpp"] = ratio("bs1", "tokens_per_s")
        summary["bs8_vs_llamacpp_server"] = ratio("bs8", "tokens_per_s")
        summary["bs8_vs_llamacpp_server_per_core"] = ratio("bs8", "tokens_per_cpu_s")
        summary["cores_used"] = {
            f"{n} {lvl}": res[lvl]["cores_used"] for n, res in results.items() for lvl in ("bs1", "bs8")
        }
        summary["bs1_vs_llamacpp_by_round"] = [
            round(a / b, 3)
            for a, b in zip(
                ours["bs1"]["tokens_per_s_by_round"], llama["bs1"]["tokens_per_s_by_round"], strict=True
            )
        ]
        summary["bs8_vs_llamacpp_server_by_round"] = [
            round(a / b, 3)
            for a, b in zip(
                ours["bs8"]["tokens_per_s_by_round"], llama["bs8"]["tokens_per_s_by_round"], strict=True
            )
        ]
        summary["goals"] = {"bs1_vs_llamacpp_per_core": ">= 0.5", "bs8_vs_llamacpp_server": ">= 2"}
    else:
        summary["llama_cpp"] = llama_note or "skipped (--no-llama-cpp)"
    return summary


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(os.environ.get("SERVE_BENCH_DIR", tmp))
        model_dir = Path(args.model) if args.model else build_model(tmp / "model", args.preset)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        servers = {"ours": ours_command(model_dir, args)}
        llama_note = None
        if not args.no_llama_cpp:
            llama, llama_note = llama_cpp_command(model_dir, tmp, tokenizer.eos_token_id, args)
            if llama is not None:
                servers["llama.cpp f16"] = llama
        results = bench_servers(servers, tmp, args)
        ids, long_ids = stall_prompts(tokenizer, args.long_prompt)
        serve_argv = servers["ours"][0][3:]
        if "llama.cpp" not in serve_argv:  # no prefix cache: the long prompt is sent twice, and the test
            serve_argv = [*serve_argv, "--prefix-cache-tokens", "0"]  # measures its prefill
        stall = measure_stall(serve_argv, ids, long_ids)

    print_report(results, stall)
    print(json.dumps(summarize(args, results, stall, llama_note)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
