"""OpenAI chat-completions request schema (pydantic) and the error body.

Only what the server implements is typed. Other request fields are refused with a 400 naming them
(``logprobs``, ``logit_bias``, ...), never ignored -- except bookkeeping that changes nothing generated
(`IGNORED_METADATA`: ``user``, ``metadata``, ``store``, ``service_tier``). ``tool_choice`` "required" / a
named function and ``response_format`` are enforced by constrained decoding (:mod:`.constrained`).
``chat_template_kwargs`` (vLLM's name) passes ``open_thinking`` / ``enable_thinking`` to the chat template.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

# Request fields that change nothing generated: accepted (OpenAI clients send them) and not used.
IGNORED_METADATA = frozenset({"user", "metadata", "store", "service_tier"})


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status`` (and
    ``headers``, e.g. ``Retry-After``)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


# Fields OpenAI clients copy back from a response message; accepted when empty (null, [], "").
ECHOED_MESSAGE_FIELDS = frozenset({"refusal", "annotations", "audio", "function_call"})


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        extra = dict(self.model_extra or {})
        if self.reasoning_content is None and isinstance(extra.get("reasoning"), str):
            self.reasoning_content = extra.pop("reasoning")  # vLLM's current name for it
        unknown = sorted(k for k, v in extra.items() if not (k in ECHOED_MESSAGE_FIELDS and not v))
        if unknown:
            raise ValueError(
                f"unsupported message field(s) {', '.join(unknown)}: the chat template cannot show them"
            )
        if self.name:
            raise ValueError("message 'name' is not supported: the chat template has no place for it")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role!r} message needs content")
        return self

    @field_validator("content")
    @classmethod
    def _no_lone_surrogates(cls, v):
        texts = [v] if isinstance(v, str) else [p.text for p in v or []]
        if any(_has_surrogate(t) for t in texts):
            raise ValueError("content holds a lone UTF-16 surrogate (e.g. \\ud800), which is not text")
        return v

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def for_template(self) -> dict:
        """The dict the chat template expects (``developer`` is OpenAI's new name for ``system``)."""
        msg: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.tool_calls:
            msg["tool_calls"] = [tc.model_dump(exclude_none=True) for tc in self.tool_calls]
        if self.reasoning_content:
            msg["reasoning_content"] = self.reasoning_content
        return msg


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionSpec


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: StrictBool | None = None  # the schema is always enforced


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError(
                "response_format.json_schema is required with type 'json_schema' (and only then)"
            )
        return self

    def target_schema(self) -> dict[str, Any] | None:
        """The JSON schema the reply must match; None for plain text."""
        if self.type == "json_object":
            return {"type": "object"}
        return self.json_schema.schema_ if self.json_schema else None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


MAX_CHOICES = 16  # n (times the prompts of a text completion) per request


class SamplingRequest(BaseModel):
    """What chat and text completions share: sampling, limits, streaming, and the refusal of the unknown."""

    model_config = ConfigDict(extra="allow")

    model: str
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: StrictBool = False  # vLLM extension, for benchmarks

    @model_validator(mode="after")
    def _refuse_unknown(self) -> SamplingRequest:
        unknown = sorted(set(self.model_extra or {}) - IGNORED_METADATA)
        if unknown:
            raise APIError(
                400,
                f"unsupported parameter(s) {', '.join(unknown)}: this server does not implement them (it "
                "refuses rather than ignores). Supported: " + ", ".join(sorted(type(self).model_fields)),
                param=unknown[0],
                code="unsupported_parameter",
            )
        return self

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s]

    def choice_seed(self, i: int) -> int | None:
        """Choice ``i``'s seed: ``seed + i`` (so n seeded choices differ, and repeat), else fresh entropy."""
        return None if self.seed is None else self.seed + i


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    open_thinking: StrictBool | None = None  # the original MiniMind server's top-level switch
    # OpenAI's / vLLM's: MiniMind has no effort levels, only the think block, so none / minimal = no thinking
    # and low / medium / high = thinking (README: Serving)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None

    @model_validator(mode="after")
    def _check_thinking(self) -> ChatCompletionRequest:
        self.opens_thinking()  # conflicting switches are a 400 naming them
        return self

    @model_validator(mode="after")
    def _check_choices(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if self.forced_tools() is not None and not self.tools:
            raise APIError(400, "tool_choice 'required' or a named function needs tools", param="tool_choice")
        name = (
            self.tool_choice.get("function", {}).get("name") if isinstance(self.tool_choice, dict) else None
        )
        if name is not None and name not in {t["function"]["name"] for t in self.tools or []}:
            raise APIError(400, f"tool_choice names '{name}', which is not in tools", param="tool_choice")
        return self

    def logprobs_top(self) -> int | None:
        """The engine's ``logprobs`` setting: alternatives per token, None when not asked for."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for tool in v or []:
            ToolSpec.model_validate(tool)  # checked, but passed on as sent (key order included)
        return v

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(v, str) and v not in ("none", "auto", "required"):
            raise ValueError("tool_choice must be 'none', 'auto', 'required' or {'type': 'function', ...}")
        if isinstance(v, dict):
            name = (v.get("function") or {}).get("name")
            if v.get("type") != "function" or not isinstance(name, str):
                raise ValueError("tool_choice object must be {'type': 'function', 'function': {'name': ...}}")
        return v

    def opens_thinking(self) -> bool:
        """Whether the prompt opens the think block: ``chat_template_kwargs`` (open_thinking /
        enable_thinking), the top-level ``open_thinking`` or ``reasoning_effort``;
        switches that disagree are refused."""
        kwargs = self.chat_template_kwargs or {}
        said = {
            f"chat_template_kwargs.{k}": bool(kwargs[k])
            for k in ("open_thinking", "enable_thinking")
            if k in kwargs
        }
        if self.open_thinking is not None:
            said["open_thinking"] = self.open_thinking
        if self.reasoning_effort is not None:
            said["reasoning_effort"] = self.reasoning_effort not in ("none", "minimal")
        if len(set(said.values())) > 1:
            shown = ", ".join(f"{k}={'on' if v else 'off'}" for k, v in said.items())
            raise APIError(400, f"thinking switches disagree ({shown})", param=next(iter(said)))
        return next(iter(said.values()), False)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def forced_tools(self) -> list[dict[str, Any]] | None:
        """The tools the reply must call (tool_choice "required": any, named: that one);
        None if not forced."""
        if self.tool_choice == "required":
            return self.tools or []
        if isinstance(self.tool_choice, dict):
            name = self.tool_choice["function"]["name"]
            return [t for t in self.tools or [] if t["function"]["name"] == name]
        return None

    def active_tools(self) -> list[dict[str, Any]] | None:
        """The tools to show the model: none with ``tool_choice="none"``."""
        if not self.tools or self.tool_choice == "none":
            return None
        return self.tools


class CompletionRequest(SamplingRequest):
    """The legacy ``/v1/completions``: a raw prompt (text or token ids, one or a batch), no chat template."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for completions
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: StrictBool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_completion(self) -> CompletionRequest:
        if self.suffix:
            raise APIError(400, "suffix (fill-in-the-middle) is not supported by this model", param="suffix",
                           code="unsupported_parameter")  # fmt: skip
        if self.best_of is not None and self.best_of != self.n:
            raise APIError(
                400, "best_of other than n is not supported", param="best_of", code="unsupported_parameter"
            )
        if self.echo and self.logprobs is not None:
            raise APIError(400, "echo with logprobs would need the prompt's log-probabilities, which this "
                           "server does not compute", param="echo", code="unsupported_parameter")  # fmt: skip
        if len(self.prompts()) * self.n > MAX_CHOICES:
            raise APIError(400, f"at most {MAX_CHOICES} choices (prompts x n) per request", param="n")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompts: strings or token-id lists."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt is empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)
