"""Conversations through the chat template: the one renderer every trainer, the recipes and the server use.

- `encode_conversation`: a whole conversation as token ids + labels on exactly the tokens the model
  generates (assistant content, reasoning, tool calls and ``<|im_end|>``, as the template's
  ``{% generation %}`` markers say; not system, user or tool turns) -- SFT;
- `render_prompt`: the text the model continues (the generation prompt, with ``open_thinking`` as asked) --
  RL rollouts, trl prompts, the server;
- `render_pair`: a prompt and one completion of it, cut so that ``prompt + completion`` is the rendered
  conversation -- DPO's chosen and rejected.
"""

from __future__ import annotations

from typing import Any

from .collate import IGNORE_INDEX

__all__ = ["encode_conversation", "render_pair", "render_prompt"]


def encode_conversation(
    tokenizer: Any,
    messages: list[dict],
    tools: list | None = None,
    max_length: int | None = None,
    **template_kwargs: Any,
) -> dict[str, list[int]]:
    """Chat-template a conversation; labels = ids on the assistant-generated tokens, -100 elsewhere.

    Truncated to `max_length` tokens from the right. The result may have no label at all (every
    assistant token beyond `max_length`): callers drop such rows (and the loop never divides by 0).
    `template_kwargs` go to the chat template (a record's ``chat_template_kwargs``, e.g.
    ``drop_empty_think``)."""
    enc = tokenizer.apply_chat_template(
        messages,
        tools=tools or None,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        **template_kwargs,
    )
    ids = list(enc["input_ids"])
    mask = list(enc["assistant_masks"])
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=False)]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def render_prompt(
    tokenizer,
    messages: list[dict],
    tools: list[dict] | None = None,
    open_thinking: bool = False,
    drop_empty_think: bool = False,
) -> str:
    """The prompt text the model continues: chat template with the generation prompt.

    ``open_thinking=True`` ends it in ``<think>\\n`` (the model writes its reasoning), ``False`` in the closed
    empty block ``<think>\\n\\n</think>\\n\\n``, or with ``drop_empty_think`` (`data.augment`) in no block."""
    extra = {"drop_empty_think": True} if drop_empty_think else {}
    return tokenizer.apply_chat_template(
        messages,
        tools=tools or None,
        tokenize=False,
        add_generation_prompt=True,
        open_thinking=open_thinking,
        **extra,
    )


def render_pair(
    tokenizer,
    prompt: list[dict],
    completion: list[dict],
    tools: list[dict] | None = None,
    open_thinking: bool = False,
    drop_empty_think: bool = False,
) -> tuple[str, str]:
    """``(prompt_text, completion_text)`` with ``prompt_text + completion_text`` == the rendered conversation.

    The prompt text is exactly :func:`render_prompt`'s, so every completion of a prompt (DPO's chosen and
    rejected, RL samples) continues the same tokens. The completion ends with the eos token (``<|im_end|>``);
    the newline the template writes after it is not part of the completion."""
    prompt_text = render_prompt(tokenizer, prompt, tools, open_thinking, drop_empty_think)
    extra = {"drop_empty_think": True} if drop_empty_think else {}
    full = tokenizer.apply_chat_template(
        list(prompt) + list(completion), tools=tools or None, tokenize=False, **extra
    )
    if not full.startswith(prompt_text):
        raise ValueError(
            "the rendered conversation does not start with the rendered prompt, so the completion cannot be "
            f"cut off it (open_thinking={open_thinking}); prompt ends {prompt_text[-40:]!r}, conversation "
            f"has {full[len(prompt_text) - 40 : len(prompt_text)]!r} there. "
            "Check the record's assistant turn."
        )
    completion_text = full[len(prompt_text) :]
    eos = tokenizer.eos_token
    if eos and eos in completion_text:
        completion_text = completion_text[: completion_text.rindex(eos) + len(eos)]
    return prompt_text, completion_text
