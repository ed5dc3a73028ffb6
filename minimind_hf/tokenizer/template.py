"""Access to the MiniMind chat template shipped with the package (``chat_template.jinja``), and the response
template that reads a generated assistant turn back into a message (`RESPONSE_TEMPLATE`)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

TEMPLATE_FILE = "chat_template.jinja"

# `{% generation %}` / `{% endgeneration %}` are a transformers-only Jinja extension (assistant-token
# masks); other engines (llama.cpp, Ollama, vLLM's own renderers) may not know the tag.
_GENERATION_TAG = re.compile(r"[ \t]*\{%-?\s*(?:end)?generation\s*-?%\}[ \t]*\n?")


@cache
def _read_template() -> str:
    return resources.files(__package__).joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")


def chat_template(with_generation_markers: bool = True) -> str:
    """Return the MiniMind chat template (Jinja source).

    With ``with_generation_markers=False`` the ``{% generation %}`` tags are removed, for export to
    engines that do not implement that transformers extension; the rendered text is unchanged.
    """
    text = _read_template()
    return text if with_generation_markers else strip_generation_markers(text)


def strip_generation_markers(template: str) -> str:
    """A chat template without its ``{% generation %}`` / ``{% endgeneration %}`` tags (renders the same)."""
    return _GENERATION_TAG.sub("", template)


# transformers' ``response_template`` (read by ``tokenizer.parse_response`` and by trl's
# ``GRPOTrainer(tools=...)``): how one generated assistant turn maps back to a message. A MiniMind turn is an
# optional ``<think>`` block, the content, then zero or more ``<tool_call>`` blocks of JSON
# ``{"name", "arguments"}``, ending in ``<|im_end|>`` -- the layout Qwen3 uses, so Qwen3 tooling parses it the
# same way. With ``prefix`` (the prompt ids) the parser knows whether the prompt already opened or closed the
# think block.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "reasoning_content": {"open": "<think>", "close_pattern": r"</think>\s*", "content": "text"},
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


def has_generation_markers(template: str | None) -> bool:
    """Whether a chat template marks the assistant's tokens (``{% generation %}``), which SFT and DPO need to
    know which tokens to learn from (``return_assistant_tokens_mask``)."""
    return bool(template) and _GENERATION_TAG.search(template) is not None


# Conversations through every branch of the template (system, tools, tool calls and responses, reasoning,
# several turns, both generation prompts): a template that renders all of them as ours does is ours, bar the
# generation markers.
_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
_PROBES: list[tuple[list[dict], dict]] = [
    ([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}], {}),
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], {"add_generation_prompt": True}),
    ([{"role": "user", "content": "Q"}], {"add_generation_prompt": True, "open_thinking": True}),
    (
        [
            {"role": "user", "content": "北京天气？"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "查一下。",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}}
                ],
            },
            {"role": "tool", "content": "晴"},
            {"role": "assistant", "content": "北京晴。"},
            {"role": "user", "content": "谢谢"},
            {"role": "assistant", "content": "不客气", "reasoning_content": "礼貌"},
        ],
        {"tools": [_WEATHER]},
    ),
]


def renders_like_ours(tokenizer, template: str) -> bool:
    """Whether `template` renders every probe conversation exactly as the MiniMind template does (e.g. the
    original MiniMind's template, which has no generation markers)."""
    ours = chat_template()
    for messages, kwargs in _PROBES:
        try:
            theirs = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template, **kwargs)
        except Exception:  # a template that cannot render these at all is not ours
            return False
        if theirs != tokenizer.apply_chat_template(messages, tokenize=False, chat_template=ours, **kwargs):
            return False
    return True
