"""The four record kinds: what each accepts, what it turns into, and the `datasets` features.

Output schema (one row of the `datasets.Dataset` that `load_records` returns). ``Message`` is the
uniform message of `minimind_hf.data.messages` (role, content, reasoning_content, tool_calls);
``tools`` is a list of function specs or ``None``, ready for ``apply_chat_template(..., tools=tools)``.

=========  ==========================================================================================
kind       columns
=========  ==========================================================================================
pretrain   ``text: str``
sft        ``conversations: list[Message]``, ``tools: list[dict] | None``
dpo        ``prompt: list[Message]``, ``chosen: list[Message]``, ``rejected: list[Message]``,
           ``tools`` (trl's *explicit prompt* conversational form: chosen/rejected hold only the
           responses, normally a single assistant turn)
rl         ``prompt: list[Message]`` (ends with a user or tool turn), ``ground_truth: str | None``,
           ``tools``
=========  ==========================================================================================

Accepted input, per kind (keys not listed are ignored):

- pretrain: ``{"text": str}``, not blank.
- sft: ``{"conversations": [...]}`` or ``{"messages": [...]}`` with at least one assistant turn and no
  empty assistant turn; optional top-level ``tools``.
- dpo: MiniMind's ``{"chosen": [...], "rejected": [...]}`` (both full conversations ending in an
  assistant turn, sharing every turn before it) or trl's ``{"prompt": [...], "chosen": [...],
  "rejected": [...]}``; chosen and rejected must differ.
- rl: a conversation (``conversations``/``messages``/``prompt``) ending with a user or tool turn, or
  with an empty assistant turn (dropped), plus optional ``gt``/``ground_truth`` (string, number, or a list of
  them: the original's agent-RL rows);
  or ``{"question": str, "answer": str | number}`` -> one user turn and ``ground_truth=str(answer)``.

Every kind accepts its own output as input, so a loaded dataset saved to parquet loads again.

Storage: ``tool_calls`` and ``tools`` are `datasets.Json` columns. Reading through `datasets` gives
Python lists of dicts; a raw pyarrow/pandas reader of a saved parquet file sees JSON strings, which
is also what this loader accepts back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from datasets import Features, Json, List, Value

from .errors import RecordError
from .messages import fail, is_empty_assistant, merge_tools, normalise_conversation, normalise_tools

__all__ = ["RECORD_FEATURES", "RECORD_KINDS", "validate_record"]

RECORD_KINDS = ("pretrain", "sft", "dpo", "rl")

# tool_calls and tools are free-form JSON (arguments, parameter schemas): as Arrow structs, every row's
# keys would be merged into every other row (adding null parameters), and pyarrow cannot flatten an
# all-null list of JSON values (`save_to_disk`/`to_parquet` fail), so each whole list is one JSON value.
_MESSAGE = {
    "role": Value("string"),
    "content": Value("string"),
    "reasoning_content": Value("string"),
    "tool_calls": Json(),
}
_TOOLS = Json()

RECORD_FEATURES: dict[str, Features] = {
    "pretrain": Features({"text": Value("string")}),
    "sft": Features({"conversations": List(_MESSAGE), "tools": _TOOLS}),
    "dpo": Features(
        {"prompt": List(_MESSAGE), "chosen": List(_MESSAGE), "rejected": List(_MESSAGE), "tools": _TOOLS}
    ),
    "rl": Features({"prompt": List(_MESSAGE), "ground_truth": Value("string"), "tools": _TOOLS}),
}


def check_kind(kind: str) -> str:
    """Return `kind` if it is one of `RECORD_KINDS`, else raise a ValueError listing them."""
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(RECORD_KINDS)}")
    return kind


def validate_record(kind: str, record: Any) -> dict:
    """Validate one record of `kind` and return it normalised to that kind's output schema.

    Raises:
        RecordError: the record is invalid; `field` and `message` say where and why (file and line
            are ``None`` here: `load_records` fills them in).
        ValueError: `kind` is not one of `RECORD_KINDS`.
    """
    check_kind(kind)
    if not isinstance(record, dict):
        fail(None, f"a record must be a JSON object, got {type(record).__name__}", "not_an_object")
    return _VALIDATORS[kind](record)


# ----------------------------------------------------------------------------------- helpers
def _guess_kind(record: dict) -> str | None:
    if "text" in record:
        return "pretrain"
    if "chosen" in record and "rejected" in record:
        return "dpo"
    if "question" in record or "gt" in record or "ground_truth" in record:
        return "rl"
    if "conversations" in record or "messages" in record:
        return "sft"
    return None


def _missing(record: dict, kind: str, what: str, field: str) -> RecordError:
    keys = ", ".join(sorted(map(str, record))) or "none"
    guess = _guess_kind(record)
    hint = (
        f"; this looks like a {guess!r} record: check the `kind` you loaded it as"
        if guess not in (None, kind)
        else ""
    )
    return RecordError(
        None, None, field, f"missing field {what} (record has keys: {keys}){hint}", reason="missing_field"
    )


def _one_of(record: dict, kind: str, keys: tuple[str, ...]) -> str:
    """The single conversation key present in `record` (aliases like conversations/messages)."""
    present = [k for k in keys if record.get(k) is not None]
    if len(present) > 1:
        fail(None, f"both {present[0]!r} and {present[1]!r} are set; keep one", "ambiguous_keys")
    if not present:
        raise _missing(record, kind, " or ".join(repr(k) for k in keys), keys[0])
    return present[0]


def _ground_truth(value: Any, field: str) -> str | None:
    """A string or number as its text; a list (the original's agent-RL ``gt``: every value the final answer
    must contain) as a JSON array of strings, which `minimind_hf.rewards.ground_truth_values` reads back."""
    if value is None:
        return None
    if isinstance(value, list):
        items = [_ground_truth(v, f"{field}[{i}]") for i, v in enumerate(value)]
        items = [v for v in items if v is not None]
        return json.dumps(items, ensure_ascii=False) if items else None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        fail(
            field,
            f"ground truth must be a string, a number or a list of them, got {type(value).__name__}",
            "wrong_type",
        )
    return str(value) if str(value).strip() else None


def _empty_turns(messages: list[dict], key: str, last_hint: str) -> None:
    for i, message in enumerate(messages):
        if is_empty_assistant(message):
            hint = last_hint if i == len(messages) - 1 else ""
            fail(f"{key}[{i}]", f"assistant turn is empty{hint}", "empty_turn")


# -------------------------------------------------------------------------------- validators
def _pretrain(record: dict) -> dict:
    if "text" not in record:
        raise _missing(record, "pretrain", "'text'", "text")
    text = record["text"]
    if not isinstance(text, str):
        fail("text", f"text must be a string, got {type(text).__name__}", "wrong_type")
    if not text.strip():
        fail("text", "text is empty", "empty_text")
    return {"text": text}


def _sft(record: dict) -> dict:
    key = _one_of(record, "sft", ("conversations", "messages"))
    messages, tools = normalise_conversation(record[key], key)
    if not any(m["role"] == "assistant" for m in messages):
        fail(
            key,
            "no assistant turn: SFT needs at least one assistant message to learn from",
            "no_assistant_turn",
        )
    _empty_turns(messages, key, " (an empty last assistant turn marks an RL prompt: load it with kind='rl')")
    top = normalise_tools(record.get("tools"), "tools")
    return {"conversations": messages, "tools": merge_tools([(tools, key), (top, "tools")])}


def _dpo(record: dict) -> dict:
    for key in ("chosen", "rejected"):
        if record.get(key) is None:
            raise _missing(record, "dpo", f"{key!r}", key)
    explicit = record.get("prompt") is not None
    prompt, chosen, rejected, groups = (_dpo_explicit if explicit else _dpo_implicit)(record)
    if chosen == rejected:  # both log-ratios are equal: the loss is constant and the pair teaches nothing
        fail(
            "rejected",
            "chosen and rejected are identical: the pair has no preference to learn (zero DPO gradient); "
            "fix the rejected response or drop the pair",
            "identical_pair",
        )
    groups.append((normalise_tools(record.get("tools"), "tools"), "tools"))
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "tools": merge_tools(groups)}


_Pair = tuple[list[dict], list[dict], list[dict], list[tuple[list[dict], str]]]


def _dpo_implicit(record: dict) -> _Pair:
    """MiniMind form: two full conversations that differ only in the last (assistant) turn."""
    convs, groups = {}, []
    for key in ("chosen", "rejected"):
        conv, tools = normalise_conversation(record[key], key)
        if conv[-1]["role"] != "assistant":
            fail(
                f"{key}[{len(conv) - 1}].role",
                f"{key} must end with an assistant turn (the response "
                f"being compared), got {conv[-1]['role']!r}",
                "bad_ending",
            )
        if len(conv) < 2:
            fail(key, f"{key} has no prompt before its response", "missing_prompt")
        convs[key] = conv
        groups.append((tools, key))
    a, b = convs["chosen"][:-1], convs["rejected"][:-1]
    for k in range(max(len(a), len(b))):
        if k < len(a) and k < len(b) and a[k] == b[k]:
            continue
        if k >= len(a) or k >= len(b):
            detail = f"chosen has {len(a)} prompt turns, rejected has {len(b)}"
        elif a[k]["role"] != b[k]["role"]:
            detail = f"role {a[k]['role']!r} vs {b[k]['role']!r}"
        else:
            detail = "different content"
        fail(
            f"rejected[{k}]",
            f"chosen and rejected prompts differ at turn {k} ({detail}); a preference "
            "pair must share every turn before the last",
            "prompt_mismatch",
        )
    return a, convs["chosen"][-1:], convs["rejected"][-1:], groups


def _dpo_explicit(record: dict) -> _Pair:
    """trl form: a shared prompt plus the two responses."""
    prompt, tools = normalise_conversation(record["prompt"], "prompt")
    if prompt[-1]["role"] == "assistant":
        fail(
            f"prompt[{len(prompt) - 1}].role",
            "the prompt must not end with an assistant turn: the responses go in chosen/rejected",
            "bad_ending",
        )
    convs, groups = {}, [(tools, "prompt")]
    for key in ("chosen", "rejected"):
        conv, tools = normalise_conversation(record[key], key)
        if conv[0]["role"] != "assistant" or conv[-1]["role"] != "assistant":
            bad = 0 if conv[0]["role"] != "assistant" else len(conv) - 1
            fail(
                f"{key}[{bad}].role",
                f"with an explicit 'prompt', {key} holds only the response and must "
                f"start and end with an assistant turn, got {conv[bad]['role']!r}",
                "bad_ending",
            )
        convs[key] = conv
        groups.append((tools, key))
    return prompt, convs["chosen"], convs["rejected"], groups


def _rl(record: dict) -> dict:
    keys = ("conversations", "messages", "prompt")
    if "question" in record and not any(record.get(k) is not None for k in keys):
        return _rl_question(record)
    key = _one_of(record, "rl", keys)
    messages, tools = normalise_conversation(record[key], key)
    if is_empty_assistant(messages[-1]):
        messages = messages[:-1]  # MiniMind's placeholder for the turn the policy generates
    if not messages:
        fail(key, "the prompt is empty once the empty assistant turn is dropped", "empty_conversation")
    last = len(messages) - 1
    if messages[last]["role"] == "assistant":
        fail(
            f"{key}[{last}]",
            "an RL prompt must end with a user or tool turn (or an empty assistant turn, which "
            "is dropped); this one ends with an assistant reply: drop it, or load the file with kind='sft'",
            "bad_ending",
        )
    if messages[last]["role"] == "system":
        fail(key, "the prompt has only a system message; add the user turn", "bad_ending")
    if record.get("gt") is not None and record.get("ground_truth") is not None:
        fail(None, "both 'gt' and 'ground_truth' are set; keep one", "ambiguous_keys")
    gt_key = "gt" if record.get("gt") is not None else "ground_truth"
    top = normalise_tools(record.get("tools"), "tools")
    return {
        "prompt": messages,
        "ground_truth": _ground_truth(record.get(gt_key), gt_key),
        "tools": merge_tools([(tools, key), (top, "tools")]),
    }


def _rl_question(record: dict) -> dict:
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        fail(
            "question",
            "question must be a non-empty string",
            "wrong_type" if not isinstance(question, str) else "empty_text",
        )
    if record.get("answer") is None:
        raise _missing(
            record, "rl", "'answer' (question/answer records need the verifiable answer)", "answer"
        )
    answer = _ground_truth(record["answer"], "answer")
    if answer is None:
        fail("answer", "answer is empty", "empty_text")
    prompt = [{"role": "user", "content": question, "reasoning_content": None, "tool_calls": None}]
    return {"prompt": prompt, "ground_truth": answer, "tools": None}


_VALIDATORS: dict[str, Callable[[dict], dict]] = {"pretrain": _pretrain, "sft": _sft, "dpo": _dpo, "rl": _rl}
