"""What the server, the terminal chat and the web page share: load a model folder, render a
conversation into prompt ids, and stream one parsed assistant reply.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from . import SERVING_DTYPES
from .engine import Engine, Finish
from .parser import THINK_OPEN, Delta, OutputParser
from .sampling import SamplingParams

logger = logging.getLogger(__name__)

_TOKENIZER_LOCK = threading.Lock()  # the fast tokenizer's encode toggles state; serialise it


def load_model(
    model_dir: str | Path, device: str = "cpu", dtype: str = "auto", trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Hugging Face model folder (weights + tokenizer with a chat template). MiniMind folders load with
    the package's own classes; the folder's Python files run only with ``trust_remote_code=True``."""
    path = Path(model_dir)
    tokenizer = _load_tokenizer(path, trust_remote_code)
    if dtype not in SERVING_DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(SERVING_DTYPES)}")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), trust_remote_code=trust_remote_code, dtype=torch_dtype
    )
    model.to(device).eval()
    if dtype == "auto" and _serve_in_bf16(model, device):
        model.to(torch.bfloat16)
        logger.info(
            "serving the float32 checkpoint in bfloat16: this CPU has bf16 instructions (--dtype float32 "
            "keeps float32)"
        )
    logger.info(
        "loaded %s (%.1fM parameters, %s) on %s",
        path, model.num_parameters() / 1e6, str(model.dtype).removeprefix("torch."), device,
    )  # fmt: skip
    return model, tokenizer


@dataclass
class ModelInfo:
    """What the engine reads of a model that another decoder runs (``serve --backend llama.cpp``): its
    config and generation config, without its weights in memory."""

    config: PretrainedConfig
    generation_config: GenerationConfig | None


def load_model_info(
    model_dir: str | Path, trust_remote_code: bool = False
) -> tuple[ModelInfo, PreTrainedTokenizerBase]:
    """A model folder's config, generation config and tokenizer (checked as :func:`load_model` does)."""
    path = Path(model_dir)
    tokenizer = _load_tokenizer(path, trust_remote_code)
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    generation = None
    if (path / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(str(path))
    return ModelInfo(config, generation), tokenizer


def _load_tokenizer(path: Path, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    import minimind_hf  # noqa: F401  (registers model_type "minimind" with the Auto classes)

    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a model folder (no config.json). Train one with `minimind-hf quickstart`, "
            f"then pass runs/quickstart/model."
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer in {path} has no chat template")
    return tokenizer


def _serve_in_bf16(model: PreTrainedModel, device: str) -> bool:
    """A float32 model on a CPU that multiplies bf16 in hardware decodes ~1.5x faster in bf16 (it reads half
    the bytes per token), as llama.cpp serves f16 exports; everywhere else the checkpoint's dtype is kept."""
    from .packed import cpu_has_native_bf16

    return torch.device(device).type == "cpu" and model.dtype == torch.float32 and cpu_has_native_bf16()


def encode_chat_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    tools: list[dict] | None = None,
    open_thinking: bool = False,
) -> tuple[str, list[int]]:
    """The chat template's text for ``messages`` + generation prompt (`data.rendering.render_prompt`), and its
    token ids (tokenised under the server's tokenizer lock)."""
    from ..data.rendering import render_prompt

    text = render_prompt(tokenizer, messages, tools, open_thinking)
    with _TOKENIZER_LOCK:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text, list(ids)


def prompt_opens_thinking(prompt_text: str) -> bool:
    """True when the prompt leaves a think block open, so generation starts inside reasoning."""
    return prompt_text.rstrip("\n").endswith(THINK_OPEN)


@dataclass
class Reply:
    """An assistant reply assembled from its deltas."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list | None = None
    finish: Finish | None = None

    def add(self, delta: Delta) -> None:
        if delta.kind == "reasoning":
            self.reasoning += delta.text
        elif delta.kind == "content":
            self.content += delta.text
        else:
            self.tool_calls = (self.tool_calls or []) + [delta.tool_call]

    @property
    def finish_reason(self) -> str:
        if self.tool_calls:
            return "tool_calls"
        return self.finish.reason if self.finish else "stop"

    def as_message(self) -> dict:
        """The assistant message to append to a conversation history."""
        msg: dict = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return msg


def stream_reply(
    engine: Engine,
    messages: list[dict],
    params: SamplingParams,
    tools: list[dict] | None = None,
    open_thinking: bool = False,
) -> Iterator[Delta | Finish]:
    """Generate one assistant turn in-process: parsed deltas, then the :class:`Finish`."""
    text, ids = encode_chat_prompt(engine.tokenizer, messages, tools, open_thinking)
    parser = OutputParser(reasoning=prompt_opens_thinking(text), parse_tool_calls=bool(tools))
    for event in engine.stream_sync(ids, params):
        if isinstance(event, Finish):
            yield from parser.finish()
            yield event
            return
        yield from parser.feed(event)
