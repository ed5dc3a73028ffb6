"""The command line: `serve` as a real process with an API key; the terminal chat loop; argument parsing."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import openai
import pytest
from _serve_helpers import CASES, free_port

from minimind_hf.serve.cli import add_serve_commands
from minimind_hf.serve.engine import Engine
from minimind_hf.serve.terminal import ChatSettings, run_chat


def test_commands_are_registered_with_safe_defaults():
    parser = argparse.ArgumentParser()
    add_serve_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "some/dir"])
    assert (args.host, args.port, args.api_key or None) == (
        "127.0.0.1",
        8998,
        os.environ.get("MINIMIND_API_KEY"),
    )
    assert parser.parse_args(["chat", "d", "--think"]).think is True
    assert parser.parse_args(["webui", "d"]).host == "127.0.0.1"


@contextmanager
def serve_process(model_dir, *extra: str):
    """`python -m minimind_hf.cli serve` on a free port; yields (url, process); always stopped."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "minimind_hf.cli", "serve", str(model_dir), "--port", str(port),
           "--threads", "1", "--model-name", "tiny", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.slow
def test_serve_process_requires_the_api_key(model_dir):
    with serve_process(model_dir, "--api-key", "sk-test-123") as (url, proc):
        good = openai.OpenAI(base_url=url + "/v1", api_key="sk-test-123", max_retries=0)
        r = good.chat.completions.create(model="tiny", messages=CASES["hello"].messages(), temperature=0)
        assert r.choices[0].message.content == CASES["hello"].content
        bad = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as exc:
            bad.chat.completions.create(model="tiny", messages=CASES["hello"].messages())
        assert exc.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        r = httpx.get(url + "/v1/models")  # no key at all
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "/health").status_code == 200  # probes need no key
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert url + "/v1" in out  # bound to loopback, as announced


@pytest.mark.slow
def test_sigterm_ends_open_requests_and_stops_within_seconds(model_dir, tmp_path):
    """A stream and a non-streamed request that would each run for minutes: SIGTERM ends both (an error
    event / a 503 naming the shutdown) and the process exits within a few seconds."""
    from transformers import AutoTokenizer

    from minimind_hf import MiniMindConfig, MiniMindForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)  # a random model with a long context: long replies
    config = MiniMindConfig.from_preset("tiny", vocab_size=len(tok), max_position_embeddings=65536)
    MiniMindForCausalLM(config).save_pretrained(tmp_path / "long")
    tok.save_pretrained(tmp_path / "long")
    with serve_process(tmp_path / "long") as (url, proc):
        body = {"model": "tiny", "messages": CASES["hello"].messages(), "max_tokens": 60_000,
                "ignore_eos": True}  # fmt: skip
        lines, replies = [], []

        def stream():
            with httpx.stream(
                "POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60
            ) as r:
                lines.extend(r.iter_lines())

        def plain():
            replies.append(httpx.post(url + "/v1/chat/completions", json=body, timeout=60))

        threads = [threading.Thread(target=stream), threading.Thread(target=plain)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        start = time.monotonic()
        proc.terminate()
        proc.communicate(timeout=30)
        stopped_after = time.monotonic() - start
        for t in threads:
            t.join(10)
    assert stopped_after < 10, f"the server took {stopped_after:.1f} s to stop"
    assert any("shutting down" in line for line in lines), lines[-3:]
    assert (
        replies and replies[0].status_code == 503 and "shutting down" in replies[0].json()["error"]["message"]
    )


def test_terminal_chat_streams_keeps_history_and_toggles(model_and_tokenizer):
    model, tok = model_and_tokenizer
    script = iter(["Say hello please.", "/reset", "/think", "你好，你是谁？", "/think", "/nope", "/exit"])
    history_sizes = []
    written: list[str] = []

    settings = ChatSettings(temperature=0.0, max_tokens=200)

    def read_line(prompt: str) -> str:
        history_sizes.append(len(settings.history))
        return next(script)

    with Engine(model, tok) as engine:
        history = run_chat(engine, settings, read_line=read_line, write=written.append)
    text = "".join(written)
    assert CASES["hello"].content in text
    assert f"[thinking] {CASES['reason'].reasoning}\n{CASES['reason'].content}" in text
    assert "[thinking on]" in text and "[thinking off]" in text and "[conversation reset]" in text
    assert "unknown command /nope" in text
    assert history_sizes == [0, 2, 0, 0, 2, 2, 2]
    assert history == [
        {"role": "user", "content": CASES["reason"].user},
        {"role": "assistant", "content": CASES["reason"].content},
    ]
    # streamed: the reply arrived in several writes
    assert sum(1 for w in written if w and w in CASES["hello"].content) > 3


def test_terminal_chat_runs_tools_and_lets_the_model_continue(model_and_tokenizer):
    from _serve_helpers import WEATHER_TOOL, weather_tool

    model, tok = model_and_tokenizer
    calls, get_weather = weather_tool()

    script = iter(["What is the weather in Paris?", "/exit"])
    written: list[str] = []
    settings = ChatSettings(
        temperature=0.0, max_tokens=40, tools=[WEATHER_TOOL], run_tools={"get_weather": get_weather}
    )
    with Engine(model, tok) as engine:
        history = run_chat(engine, settings, read_line=lambda _: next(script), write=written.append)
    text = "".join(written)
    assert calls and calls[0] == "Paris"
    assert "[tool get_weather -> sunny, 18 C]" in text
    roles = [m["role"] for m in history]
    assert roles[:3] == ["user", "assistant", "tool"] and history[2]["content"] == "sunny, 18 C"
    assert history[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    if (
        len(roles) > 3
    ):  # the model continued after the tool response (within this fixture's 384-token context)
        assert roles[3] == "assistant" and roles.count("assistant") <= 1 + settings.max_tool_rounds
    else:  # or the tool response filled the context: said cleanly, the session goes on to /exit
        assert "[error: prompt has" in text and "/reset to start again" in text


@pytest.mark.parametrize("command", ["serve", "chat", "webui"])
def test_a_folder_that_is_not_a_model_is_one_line_not_a_traceback(tmp_path, command, capsys, caplog):
    from minimind_hf.cli import main

    assert main([command, str(tmp_path)]) == 2
    assert "is not a model folder (no config.json)" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


def _engine_args(model_dir, *extra: str) -> argparse.Namespace:
    from minimind_hf.cli import build_parser

    return build_parser().parse_args(["serve", str(model_dir), "--threads", "1", *extra])


@pytest.mark.slow
def test_llama_cpp_backend_engine_holds_no_torch_weights(model_dir, caplog):
    """`serve --backend llama.cpp`: llama.cpp holds the weights, the engine only the config (a 64M model's
    fp32 weights were loaded beside the GGUF's), and the memorised reply comes back."""
    pytest.importorskip("llama_cpp")
    from minimind_hf.serve.chat import ModelInfo, encode_chat_prompt
    from minimind_hf.serve.cli import _engine
    from minimind_hf.serve.sampling import SamplingParams

    engine = _engine(_engine_args(model_dir, "--backend", "llama.cpp", "--max-batch-size", "2"))
    assert isinstance(engine.model, ModelInfo)
    with engine:
        ids = encode_chat_prompt(engine.tokenizer, CASES["hello"].messages())[1]
        text, _ = engine.generate_text(ids, SamplingParams(max_new_tokens=60, temperature=0.0))
    assert text == CASES["hello"].completion()
    engine.decoder.close()
    assert _engine(_engine_args(model_dir, "--backend", "llama.cpp", "--dtype", "bfloat16")) is None
    assert "--dtype is read by --backend torch only" in caplog.text
