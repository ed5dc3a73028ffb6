"""Access to the MiniMind chat template shipped with the package (``chat_template.jinja``)."""

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
