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
    if not with_generation_markers:
        text = _GENERATION_TAG.sub("", text)
    return text


# transformers' ``response_template`` (read by ``tokenizer.parse_response`` and by trl's ``GRPOTrainer(tools=...)``):
# how one generated assistant turn maps back to a message. A MiniMind turn is an optional ``<think>`` block, the
# content, then zero or more ``<tool_call>`` blocks of JSON ``{"name", "arguments"}``, ending in ``<|im_end|>`` --
# the layout Qwen3 uses, so Qwen3 tooling parses it the same way. With ``prefix`` (the prompt ids) the parser knows
# whether the prompt already opened or closed the think block.
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
