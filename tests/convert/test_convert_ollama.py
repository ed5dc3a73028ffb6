"""to-ollama: model.gguf + Modelfile. The Modelfile's Go TEMPLATE is rendered by Go's own text/template (the
engine Ollama uses) with Ollama's data shape, and must equal transformers' `apply_chat_template`.

Ollama itself cannot be installed here (not on PyPI or Debian); the Go rendering test needs a `go` toolchain
(Debian: golang-go) and is skipped with a reason without one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from minimind_hf.convert import to_ollama
from minimind_hf.convert.ollama import OLLAMA_TEMPLATE, STOP_TOKENS

from minimind_hf.tokenizer import chat_template

GO_RENDERER = r"""
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

// The shapes Ollama's template.Execute passes (api.Message, api.ToolCall, api.Tool): tool-call arguments and
// tools print as compact JSON through their String() methods.
type Args map[string]any

func (a Args) String() string { b, _ := json.Marshal(map[string]any(a)); return string(b) }

type Tool map[string]any

func (t Tool) String() string { b, _ := json.Marshal(map[string]any(t)); return string(b) }

type Function struct {
	Name      string
	Arguments Args
}
type ToolCall struct{ Function Function }
type Message struct {
	Role      string
	Content   string
	ToolCalls []ToolCall
}
type Input struct {
	Template string
	System   string
	Messages []Message
	Tools    []Tool
}

func main() {
	var in Input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("modelfile").Parse(in.Template))
	data := map[string]any{"System": in.System, "Messages": in.Messages, "Tools": in.Tools, "Response": ""}
	if err := t.Execute(os.Stdout, data); err != nil {
		panic(err)
	}
}
"""


@pytest.fixture(scope="module")
def go_renderer(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip(
            "no Go toolchain (apt-get install golang-go): cannot run Go's text/template, Ollama's engine"
        )
    root = tmp_path_factory.mktemp("go")
    (root / "main.go").write_text(GO_RENDERER)
    env = {
        **os.environ,
        "GOCACHE": str(root / "cache"),
        "GOPATH": str(root / "gopath"),
        "GO111MODULE": "off",
        "GOFLAGS": "-p=1",
    }
    subprocess.run(
        [go, "build", "-o", str(root / "render"), str(root / "main.go")],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )

    def render(messages, tools=None) -> str:
        # Ollama hands system messages to the template as .System (collated), the rest as .Messages.
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        msgs = [
            {
                "Role": m["role"],
                "Content": m.get("content") or "",
                "ToolCalls": [
                    {"Function": {"Name": c["function"]["name"], "Arguments": c["function"]["arguments"]}}
                    for c in m.get("tool_calls", [])
                ],
            }
            for m in messages
        ]
        payload = {"Template": OLLAMA_TEMPLATE, "System": system, "Messages": msgs, "Tools": tools or []}
        proc = subprocess.run(
            [str(root / "render")],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return proc.stdout

    return render


CONVERSATIONS = {
    "user": [{"role": "user", "content": "你好，请介绍一下你自己。"}],
    "system": [{"role": "system", "content": "You are MiniMind."}, {"role": "user", "content": "Hi!"}],
    "multi-turn": [
        {"role": "user", "content": "1+1=?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2+2?"},
    ],
    "tool-call": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Beijing?"},
        # Arguments as a compact JSON string on the Jinja side = Ollama's compact JSON of the map.
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Beijing"}}}
            ],
        },
        {"role": "tool", "content": '{"temp": 20}'},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "20 度，晴。"},
        {"role": "user", "content": "Thanks"},
    ],
    "tool-call-last": [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Beijing"}}},
                {"type": "function", "function": {"name": "get_time", "arguments": {"tz": "UTC+8"}}},
            ],
        },
        {"role": "tool", "content": "20"},
    ],
}


def _jinja_messages(messages):
    """The same conversation for transformers, with tool-call arguments as Go's compact JSON string."""
    out = []
    for m in messages:
        m = dict(m)
        if "tool_calls" in m:
            m["tool_calls"] = [
                {
                    **c,
                    "function": {
                        **c["function"],
                        "arguments": json.dumps(
                            c["function"]["arguments"], separators=(",", ":"), ensure_ascii=False
                        ),
                    },
                }
                for c in m["tool_calls"]
            ]
        out.append(m)
    return out


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_go_template_renders_like_the_jinja_template(name, go_renderer, tokenizer):
    messages = CONVERSATIONS[name]
    expected = tokenizer.apply_chat_template(
        _jinja_messages(messages), tokenize=False, add_generation_prompt=True
    )
    assert go_renderer(messages) == expected


def test_go_template_with_tools(go_renderer, tokenizer):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather"}}]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}]
    got = go_renderer(messages, tools)
    expected = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=True
    )
    # Same text except the tool JSON itself: Go encodes compactly with sorted keys, Jinja's tojson with
    # spaces.
    compact = json.dumps(tools[0], separators=(",", ":"), sort_keys=True)
    spaced = re.search(r"<tools>\n(.*)\n</tools>", expected).group(1)
    assert json.loads(spaced) == tools[0]
    assert got == expected.replace(spaced, compact)


def test_to_ollama_folder(trained, tmp_path):
    out = to_ollama(trained["dense"], tmp_path / "ollama", outtype="q8_0", system="You are MiniMind.")
    assert sorted(os.listdir(out)) == ["Modelfile", "README.md", "model.gguf"]
    text = (out / "Modelfile").read_text()
    assert re.search(r"^FROM \./model\.gguf$", text, re.M)
    assert f'TEMPLATE """{OLLAMA_TEMPLATE}"""' in text
    assert 'SYSTEM """You are MiniMind."""' in text
    for tok in STOP_TOKENS:
        assert f'PARAMETER stop "{tok}"' in text
    assert re.search(r"^PARAMETER num_ctx 2048$", text, re.M)
    assert re.search(r"^PARAMETER temperature 0\.85$", text, re.M)
    assert "ollama create minimind -f Modelfile" in (out / "README.md").read_text()
    # The GGUF carries the Jinja template too (newer Ollama uses it when TEMPLATE is absent).
    gguf = pytest.importorskip("gguf")
    fields = gguf.GGUFReader(out / "model.gguf").fields
    assert fields["tokenizer.chat_template"].contents() == chat_template(with_generation_markers=False)
