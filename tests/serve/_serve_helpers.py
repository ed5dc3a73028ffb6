"""What the serving tests share: a tiny MiniMind overfit on a few fixed replies (`build_model_dir`), the
replies (`CASES`), a weather tool, a free port and an in-process server (`BackgroundServer`).

A random tiny model writes garbage, which cannot test reasoning or tool-call parsing. Here a 2-layer,
hidden-64 model is trained for a few seconds on four fixed conversations (a reasoning reply, a tool
call, a plain English reply with an emoji, a counting reply for `stop`), until greedy decoding
reproduces each reply exactly from its prompt. The tests then exercise the real path: the chat
template, the model, batching, incremental decoding and parsing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import minimind_hf  # noqa: F401
from minimind_hf import MiniMindConfig, MiniMindForCausalLM
from minimind_hf.tokenizer import train_tokenizer

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _var in ("NO_PROXY", "no_proxy"):  # test traffic only ever goes to loopback
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))

CONTEXT = 384  # small, so "too many tokens" is easy to provoke

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


def weather_tool() -> tuple[list[str], object]:
    """A real ``get_weather`` for the tool-running front ends, and the list of cities it was called with."""
    calls: list[str] = []

    def get_weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: City name
        """
        calls.append(city)
        return "sunny, 18 C"

    return calls, get_weather


@dataclass(frozen=True)
class Case:
    """One memorised conversation: what the client sends and what the model must produce."""

    name: str
    user: str
    thinking: bool
    tools: tuple = ()
    reasoning: str = ""
    content: str = ""
    tool_call: tuple | None = None  # (name, arguments dict)

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.user}]

    def completion(self) -> str:
        """The exact text the model generates after the generation prompt (before <|im_end|>)."""
        text = ""
        if self.thinking:
            text += self.reasoning + "\n</think>\n\n"
        text += self.content
        if self.tool_call:
            name, args = self.tool_call
            text += (
                ("\n" if self.content else "")
                + "<tool_call>\n"
                + json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
                + "\n</tool_call>"
            )
        return text


CASES = {
    c.name: c
    for c in [
        Case(
            "reason",
            "你好，你是谁？",
            thinking=True,
            reasoning="用户在问我是谁。我应该介绍自己。",
            content="你好！我是 MiniMind，一个小小的语言模型。😀",
        ),
        Case(
            "tool",
            "What is the weather in Paris?",
            thinking=False,
            tools=(WEATHER_TOOL,),
            tool_call=("get_weather", {"city": "Paris"}),
        ),
        Case("hello", "Say hello please.", thinking=False, content="Hello! How can I help you today? 🚀"),
        Case("count", "Count to eight.", thinking=False, content="one two three four five six seven eight"),
    ]
}


def _training_rows(tok) -> list[tuple[list[int], list[int]]]:
    rows = []
    for case in CASES.values():
        prompt = tok.apply_chat_template(
            case.messages(),
            tools=list(case.tools) or None,
            add_generation_prompt=True,
            tokenize=False,
            open_thinking=case.thinking,
        )
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(case.completion() + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((p_ids, c_ids))
    return rows


@torch.no_grad()
def _memorised(model, rows) -> bool:
    """Greedy decoding with plain transformers generate reproduces every reply (independent of our engine)."""
    model.eval()
    for p, c in rows:
        gen = model.generate(
            torch.tensor([p]), max_new_tokens=len(c) + 2, do_sample=False, eos_token_id=2, pad_token_id=0
        )
        if gen[0, len(p) :].tolist() != c:
            return False
    return True


def build_model_dir(out: Path, steps: int = 400, seed: int = 0) -> Path:
    texts = []
    for case in CASES.values():
        texts += [case.user, case.reasoning, case.content, case.completion(), json.dumps(WEATHER_TOOL)]
    tok = train_tokenizer(texts * 4, vocab_size=420, show_progress=False)
    torch.manual_seed(seed)
    config = MiniMindConfig.from_preset("tiny", vocab_size=len(tok), max_position_embeddings=CONTEXT)
    model = MiniMindForCausalLM(config)
    rows = _training_rows(tok)
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        seq = p + c
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p) : len(seq)] = torch.tensor(c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for step in range(1, steps + 1):
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 and loss.item() < 0.02 and _memorised(model, rows):
            break
    else:
        raise AssertionError(
            f"the tiny model did not memorise its replies in {steps} steps (loss {loss.item():.4f})"
        )
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn serving an app on 127.0.0.1 in a thread of this process, stopped at teardown."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)
