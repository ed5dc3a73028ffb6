"""Validated API requests -> engine requests (one per choice): the model name, the room left in the context,
the sampling parameters, the grammar ``tool_choice`` / ``response_format`` impose, the output parser.

These run on the app's render thread (they render and tokenise), never on the event loop; each refusal is
an :class:`~minimind_hf.serve.schemas.APIError` in OpenAI's words.
"""

from __future__ import annotations

import dataclasses

from jinja2 import TemplateError

from .chat import _TOKENIZER_LOCK, encode_chat_prompt, prompt_opens_thinking
from .constrained import GrammarError, build_grammar
from .parser import OutputParser
from .sampling import SamplingParams
from .schemas import APIError, ChatCompletionRequest, CompletionRequest, SamplingRequest
from .state import ServerState


@dataclasses.dataclass
class EngineRequest:
    """One engine request of a response (one choice)."""

    ids: list[int]
    params: SamplingParams
    constraint: object | None
    parser: OutputParser | None


def _text_bytes(value) -> int:
    """UTF-8 bytes of every string in a (JSON-like) value."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return sum(_text_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_text_bytes(v) for v in value)
    return 0


def check_model(state: ServerState, req: SamplingRequest) -> None:
    if req.model not in state.names:
        served = ", ".join(f"'{n}'" for n in state.names)
        raise APIError(
            404,
            f"The model '{req.model}' does not exist; this server serves {served} (serve --model-name adds "
            "names).",
            param="model",
            code="model_not_found",
        )


def check_room(
    state: ServerState, n_prompt: int, wanted: int | None, param: str, what: str = "messages"
) -> int:
    """The tokens left for the reply after an ``n_prompt``-token prompt (400 when none, or fewer than
    ``wanted``)."""
    context = state.context
    room = context - n_prompt
    if room < 1:
        raise APIError(
            400,
            f"This model's maximum context length is {context} tokens. However, your {what} "
            f"resulted in {n_prompt} tokens. Please reduce the length of the {what}.",
            param=what,
            code="context_length_exceeded",
        )
    if wanted is not None and wanted > room:
        raise APIError(
            400,
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{n_prompt + wanted} tokens ({n_prompt} in the {what}, {wanted} in the completion). "
            f"Please reduce the length of the {what} or completion.",
            param=param,
            code="context_length_exceeded",
        )
    return room


def sampling(
    state: ServerState, req: SamplingRequest, max_new_tokens: int, logprobs: int | None
) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=state.default_temperature if req.temperature is None else req.temperature,
        top_p=state.default_top_p if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        seed=req.seed,
        stop=tuple(req.stop or ()),
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
    )


def constraint_for(state: ServerState, req: ChatCompletionRequest, tools, opens_thinking: bool):
    """The grammar ``tool_choice`` / ``response_format`` impose, compiled; None when they impose none."""
    forced = req.forced_tools()
    schema = req.response_format.target_schema() if req.response_format else None
    if forced is None and schema is None:
        return None
    param = "tool_choice" if forced is not None else "response_format"
    if opens_thinking:
        raise APIError(
            400,
            f"{param} cannot be combined with open thinking (chat_template_kwargs): the grammar covers the "
            "whole reply",
            param=param,
        )
    if forced is not None and schema is not None:
        raise APIError(400, "tool_choice forces a tool call; response_format cannot apply too", param=param)
    if not state.grammars.available():
        raise APIError(
            400, f"{param} needs llguidance on the server: pip install llguidance", param=param,
            code="unsupported_parameter",
        )  # fmt: skip
    grammar = build_grammar(
        state.engine.tokenizer,
        call_tools=forced if forced is not None else tools,
        calls_required=forced is not None,
        response_schema=schema,
    )
    try:
        return state.grammars.compile(grammar)
    except GrammarError as exc:
        raise APIError(400, f"{param}: the schema could not be compiled: {exc}", param=param) from exc


def _check_chat_bytes(state: ServerState, messages: list[dict], tools) -> None:
    """Refuse a conversation too long by its bytes alone, before it is rendered and tokenised."""
    if not state.token_bytes:
        return
    least_tokens = (_text_bytes(messages) + _text_bytes(tools)) // state.token_bytes
    if least_tokens >= state.context:
        raise APIError(
            400,
            f"This model's maximum context length is {state.context} tokens. However, your messages "
            f"are at least {least_tokens} tokens long. Please reduce the length of the messages.",
            param="messages",
            code="context_length_exceeded",
        )


def prepare_chat(state: ServerState, req: ChatCompletionRequest) -> list[EngineRequest]:
    check_model(state, req)
    tools = req.active_tools()
    messages = [m.for_template() for m in req.messages]
    _check_chat_bytes(state, messages, tools)
    try:
        text, ids = encode_chat_prompt(state.engine.tokenizer, messages, tools, req.opens_thinking())
    except TemplateError as exc:
        raise APIError(
            400, f"The messages could not be rendered with the chat template: {exc}", param="messages"
        ) from exc
    wanted = req.requested_tokens()
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    room = check_room(state, len(ids), wanted, param)
    params = sampling(state, req, wanted or room, req.logprobs_top())
    opens_thinking = prompt_opens_thinking(text)
    constraint = constraint_for(state, req, tools, opens_thinking)
    out = []
    for i in range(req.n):  # each choice its own seed, grammar state and parser
        out.append(
            EngineRequest(
                ids,
                dataclasses.replace(params, seed=req.choice_seed(i)),
                constraint if i == 0 or constraint is None else constraint.copy(),
                OutputParser(reasoning=opens_thinking, parse_tool_calls=bool(tools)),
            )
        )
    return out


def _prompt_ids(state: ServerState, prompt: str | list[int]) -> list[int]:
    """A legacy completion prompt's token ids: a text tokenised (no special tokens), or ids checked."""
    if isinstance(prompt, str):
        least_tokens = _text_bytes(prompt) // state.token_bytes if state.token_bytes else 0
        if least_tokens >= state.context:  # too long by its bytes alone: refused before tokenising
            check_room(state, least_tokens, None, "prompt", "prompt")
        with _TOKENIZER_LOCK:
            ids = state.engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    else:
        ids = prompt
        bad = [t for t in ids if not 0 <= t < state.vocab_size]
        if bad:
            raise APIError(400, f"prompt token id {bad[0]} is outside the vocabulary "
                                f"(0..{state.vocab_size - 1})",
                           param="prompt")  # fmt: skip
    if not ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    return ids


def prepare_text(state: ServerState, req: CompletionRequest) -> list[EngineRequest]:
    check_model(state, req)
    out = []
    for prompt in req.prompts():
        ids = _prompt_ids(state, prompt)
        room = check_room(state, len(ids), req.max_tokens, "max_tokens", "prompt")
        params = sampling(state, req, min(req.max_tokens or room, room), req.logprobs)
        for _ in range(req.n):
            seed = req.choice_seed(len(out))
            out.append(EngineRequest(list(ids), dataclasses.replace(params, seed=seed), None, None))
    return out
