"""Tiny models that really call a tool: overfit on one tool-use conversation (shared by the native and recipe
tests; tests/ is on sys.path through its conftest.py)."""

from __future__ import annotations

CALC_PROMPT = [{"role": "user", "content": "What is 6*7?"}]
CALC_CALL = {"name": "calculator", "arguments": {"expression": "6*7"}}
CALC_CONVERSATION = CALC_PROMPT + [
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": CALC_CALL}]},
    {"role": "tool", "content": "42"},
    {"role": "assistant", "content": "The answer is 42."},
]


def memorise(model, tokenizer, conversation, tools, steps: int = 150) -> None:
    """Overfit the assistant turns of one conversation (a real model that then makes the tool call itself)."""
    import torch

    enc = tokenizer.apply_chat_template(
        conversation, tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = torch.tensor([enc["input_ids"]])
    labels = ids.masked_fill(torch.tensor([enc["assistant_masks"]]) == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
