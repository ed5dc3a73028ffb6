"""``README.md`` model cards for the folders we write (training outputs, adapters), in the Hub's format.

The YAML front matter is what the Hub and trl's tooling read (``base_model``, ``datasets``, ``library_name``,
``pipeline_tag``, ``tags``); the body says how the folder was made and how to load it without this package.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

__all__ = ["write_model_card"]


_MADE_BY = {"trl": "trl trainer", "native": "minimind-hf native trainer", "convert": "minimind-hf convert"}


def _hub_or_local(name: str | None) -> str | None:
    """A Hub name as is; a local folder by its absolute path (the Hub only links Hub names)."""
    if not name:
        return None
    path = Path(name)
    return str(path.resolve()) if path.exists() else name


def write_model_card(
    folder: str | Path,
    *,
    stage: str,
    backend: str,
    base_model: str | None = None,
    data: Sequence[str] = (),
    adapter: bool = False,
    extra: str = "",
    load_from: str | Path | None = None,
    own_code: bool = True,
) -> Path:
    """Write ``folder/README.md``; returns its path.
    ``adapter``: the folder is a peft adapter of `base_model`;
    ``load_from``: the path the snippet loads (default: `folder`; an atomic writer passes the final path);
    ``own_code``: the folder ships MiniMind's model code (false for plain transformers exports)."""
    folder = Path(folder)
    where = Path(load_from or folder).resolve()
    base = _hub_or_local(base_model)
    hub_data = [d for d in data if not Path(d).exists() and not d.startswith("demo:")]
    meta = {
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["minimind", "minimind-hf", stage, backend] + (["lora"] if adapter else []),
    }
    if base and not Path(base).exists():
        meta["base_model"] = base
    if hub_data:
        meta["datasets"] = hub_data
    made = f"Stage **{stage}** ({_MADE_BY.get(backend, backend)})"
    made += f", starting from `{base}`" if base else ", from a freshly initialised model"
    made += "." if not data else ", on: " + ", ".join(f"`{d}`" for d in data) + "."
    if adapter:
        load = (
            "```python\nfrom peft import PeftModel\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'base = AutoModelForCausalLM.from_pretrained("{base}", trust_remote_code=True)\n'
            f'model = PeftModel.from_pretrained(base, "{where}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n```'
        )
    else:
        load = (
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{where}"'
            f"{', trust_remote_code=True' if own_code else ''})\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
            'messages = [{"role": "user", "content": "1 + 1 = ?"}]\n'
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
            'return_tensors="pt", return_dict=True)\n'
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0]))\n```"
        )
    body = (
        f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n"
        f"# {where.name}\n\n"
        "A [MiniMind](https://github.com/jingyaogong/minimind) model made with minimind-hf. "
        f"{made}\n\n"
        + (
            "The folder carries its own model code (`auto_map`), so it loads with plain transformers >= 5 "
            "(the code is written for transformers 5's API; for transformers 4.x or vLLM, export it with "
            "`minimind-hf convert to-qwen3`); the `minimind_hf` package is not needed:\n\n"
            if own_code
            else "The folder is a plain transformers model (no remote code, no `minimind_hf` needed); its "
            "config carries the fields transformers 4.x reads too (tested with 4.57):\n\n"
        )
        + f"{load}\n"
        + (f"\n{extra.strip()}\n" if extra.strip() else "")
    )
    path = folder / "README.md"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path
