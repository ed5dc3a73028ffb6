"""The OpenAI-compatible server, driven by the real `openai` client (and raw HTTP for the wire format)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
import torch
from _serve_helpers import CASES, WEATHER_TOOL, BackgroundServer

from minimind_hf.serve.app import create_app
from minimind_hf.serve.engine import Engine

MODEL = "tiny-chat"


@pytest.fixture(scope="module")
def server(model_and_tokenizer):
    model, tok = model_and_tokenizer
    engine = Engine(model, tok, max_batch_size=8)
    with BackgroundServer(create_app(engine, MODEL)) as srv:
        srv.engine = engine
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def request_kwargs(case) -> dict:
    kwargs: dict = {"model": MODEL, "messages": case.messages(), "temperature": 0}
    if case.tools:
        kwargs["tools"] = list(case.tools)
    if case.thinking:
        kwargs["extra_body"] = {"chat_template_kwargs": {"open_thinking": True}}
    return kwargs


def accumulate(chunks) -> dict:
    """Rebuild a message from streamed chunks the way OpenAI clients do (tool calls merged by index)."""
    out = {
        "role": None,
        "content": "",
        "reasoning": "",
        "tool_calls": {},
        "finish": None,
        "usage": None,
        "n_content_chunks": 0,
    }
    for ch in chunks:
        if ch.usage is not None:
            out["usage"] = ch.usage
        for choice in ch.choices:
            d = choice.delta
            out["role"] = out["role"] or d.role
            if d.content:
                out["content"] += d.content
                out["n_content_chunks"] += 1
            out["reasoning"] += getattr(d, "reasoning_content", None) or ""
            assert getattr(d, "reasoning", None) == getattr(
                d, "reasoning_content", None
            )  # the same, both names
            for tc in d.tool_calls or []:
                slot = out["tool_calls"].setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = slot["id"] or tc.id
                slot["name"] += tc.function.name or ""
                slot["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                out["finish"] = choice.finish_reason
    return out


def test_models_endpoint(client, server):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_non_stream_reasoning_and_usage(client, model_and_tokenizer):
    _, tok = model_and_tokenizer
    case = CASES["reason"]
    r = client.chat.completions.create(**request_kwargs(case))
    msg = r.choices[0].message
    assert msg.role == "assistant"
    assert msg.content == case.content
    assert msg.reasoning_content == case.reasoning and msg.reasoning == case.reasoning  # both clients' names
    assert msg.tool_calls is None
    assert r.choices[0].finish_reason == "stop"
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == MODEL
    prompt_ids = tok.apply_chat_template(
        case.messages(), add_generation_prompt=True, open_thinking=True, tokenize=True, return_dict=True
    )["input_ids"]
    completion_ids = tok(case.completion() + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert r.usage.prompt_tokens == len(prompt_ids)
    assert r.usage.completion_tokens == len(completion_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_thinking_off_gives_no_reasoning(client):
    case = CASES["hello"]
    msg = client.chat.completions.create(**request_kwargs(case)).choices[0].message
    assert msg.content == case.content
    assert getattr(msg, "reasoning_content", None) is None


def test_stream_reasoning(client):
    case = CASES["reason"]
    chunks = list(
        client.chat.completions.create(
            **request_kwargs(case), stream=True, stream_options={"include_usage": True}
        )
    )
    got = accumulate(chunks)
    assert got["role"] == "assistant"
    assert got["reasoning"] == case.reasoning
    assert got["content"] == case.content
    assert got["n_content_chunks"] > 3, "content should arrive in several pieces"
    assert got["finish"] == "stop"
    assert got["usage"].completion_tokens > 0 and chunks[-1].choices == []
    assert all(ch.id == chunks[0].id and ch.object == "chat.completion.chunk" for ch in chunks)


def test_tool_call_non_stream(client):
    case = CASES["tool"]
    r = client.chat.completions.create(**request_kwargs(case))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_tool_call_stream_and_round_trip(client, model_and_tokenizer):
    case = CASES["tool"]
    chunks = list(client.chat.completions.create(**request_kwargs(case), stream=True))
    got = accumulate(chunks)
    assert got["finish"] == "tool_calls" and got["content"] == ""
    assert list(got["tool_calls"]) == [0]
    call = got["tool_calls"][0]
    assert call["id"].startswith("call_") and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    # The client's usual next request: the call and its result go back in the conversation.
    messages = case.messages() + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'},
    ]
    # (without the tool list: the test model's 384-token context cannot hold it twice)
    r = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=5)
    assert r.choices[0].finish_reason in ("stop", "length")
    expected_prompt = model_and_tokenizer[1].apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert r.usage.prompt_tokens == len(expected_prompt)
    assert "<tool_call>" in model_and_tokenizer[1].decode(expected_prompt)


def test_tool_choice_none_hides_tools(client):
    case = CASES["tool"]
    r = client.chat.completions.create(**request_kwargs(case), tool_choice="none", max_tokens=8)
    assert r.choices[0].message.tool_calls is None
    assert r.usage.prompt_tokens < 100  # the tool definitions were not rendered


def test_stop_max_tokens_and_seed(client):
    case = CASES["count"]
    r = client.chat.completions.create(**request_kwargs(case), stop=["five"])
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("one two three four ", "stop")
    got = accumulate(client.chat.completions.create(**request_kwargs(case), stop=["five"], stream=True))
    assert (got["content"], got["finish"]) == ("one two three four ", "stop")
    r = client.chat.completions.create(**request_kwargs(case), max_tokens=4)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4
    kwargs = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "anything at all"}],
        "temperature": 2.0,
        "top_p": 0.99,
        "max_tokens": 20,
        "extra_body": {"ignore_eos": True},
    }
    a = client.chat.completions.create(**kwargs, seed=7).choices[0].message.content
    b = client.chat.completions.create(**kwargs, seed=7).choices[0].message.content
    c = client.chat.completions.create(**kwargs, seed=8).choices[0].message.content
    assert a == b and a != c


def test_twenty_concurrent_streams(server):
    async def one(aclient, case, i):
        kwargs = request_kwargs(case)
        chunks = [ch async for ch in await aclient.chat.completions.create(**kwargs, stream=True)]
        return case, accumulate(chunks)

    async def main():
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120
        ) as ac:
            cases = [list(CASES.values())[i % len(CASES)] for i in range(20)]
            return await asyncio.gather(*(one(ac, c, i) for i, c in enumerate(cases)))

    steps_before = server.engine.steps
    start = time.monotonic()
    results = asyncio.run(main())
    assert len(results) == 20
    for case, got in results:
        assert got["content"] == case.content, case.name
        assert got["reasoning"] == case.reasoning, case.name
        if case.tool_call:
            assert got["finish"] == "tool_calls"
            assert [(c["name"], json.loads(c["arguments"])) for c in got["tool_calls"].values()] == [
                case.tool_call
            ]
        else:
            assert got["finish"] == "stop" and not got["tool_calls"]
    longest = max(len(case.completion()) for case, _ in results)
    # batched: far fewer decoding steps than 20 requests one after another would take
    assert server.engine.steps - steps_before < 20 * longest / 2
    assert server.engine.max_rows_seen == 8
    assert time.monotonic() - start < 90


def post(server, body, headers=None) -> httpx.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(
        server.url + "/v1/chat/completions",
        content=data,
        timeout=30,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello please."}], "temperature": 0}


@pytest.mark.parametrize(
    "body,status,param",
    [
        ("{not json", 400, None),
        ({"model": MODEL}, 400, "messages"),
        ({**GOOD, "model": "gpt-4"}, 404, "model"),
        ({**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({**GOOD, "messages": [{"role": "user"}]}, 400, "messages.0"),
        ({**GOOD, "max_tokens": 10**9}, 400, "max_tokens"),
        ({**GOOD, "max_tokens": 0}, 400, "max_tokens"),
        ({**GOOD, "messages": [{"role": "user", "content": "hello " * 2000}]}, 400, "messages"),
        ({**GOOD, "temperature": 3.5}, 400, "temperature"),
        ({**GOOD, "n": 17}, 400, "n"),
        ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({**GOOD, "tools": [{"type": "function", "function": {"description": "no name"}}]}, 400, "tools"),
        # refused rather than ignored with a 200 (nothing accepted is silently ignored)
        ({**GOOD, "top_logprobs": 2}, 400, "top_logprobs"),  # without logprobs: true
        ({**GOOD, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
        ({**GOOD, "logit_bias": {"42": 100}}, 400, "logit_bias"),
        ({**GOOD, "stream": "yes"}, 400, "stream"),
        # message fields the template cannot show are refused, not dropped
        ({**GOOD, "messages": [{"role": "user", "content": "hi", "name": "bob"}]}, 400, "messages.0"),
        ({**GOOD, "messages": [{"role": "user", "content": "hi", "lang": "en"}]}, 400, "messages.0"),
        (
            {**GOOD, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "x": 1}]}]},
            400,
            "messages.0.content",
        ),  # fmt: skip
        ({**GOOD, "stream_options": {"include_usage": True, "extra": 1}}, 400, "stream_options"),
        (
            json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "SURROGATE"}]}).replace(
                "SURROGATE", "\\ud800"
            ),
            400,
            "messages.0.content",
        ),
    ],
)
def test_bad_requests_get_openai_errors(server, body, status, param):
    r = post(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["message"]
    if param:
        assert (err["param"] or "").startswith(param), err
    # the server keeps serving
    ok = post(server, GOOD)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == CASES["hello"].content


def test_errors_through_the_openai_client(client, server):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100000
        )
    assert exc.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    r = httpx.get(server.url + "/v1/does-not-exist")
    assert r.status_code == 404 and "error" in r.json()


def test_sse_wire_format_and_disconnect(server):
    body = {**GOOD, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["choices"][0]["delta"]["role"] == "assistant"
    # a client that goes away mid-stream does not keep the model busy
    steps = server.engine.steps
    long = {**GOOD, "stream": True, "max_tokens": 300, "ignore_eos": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=long, timeout=30) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 3:
                break
    deadline = time.monotonic() + 30
    while server.engine._active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.engine.steps - steps < 250


def test_bookkeeping_fields_are_accepted_and_health_needs_no_key(server):
    r = post(server, {**GOOD, "user": "u-1", "metadata": {"k": "v"}, "store": False})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == CASES["hello"].content
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200


def test_overload_is_a_503_with_retry_after(model_and_tokenizer):
    model, tok = model_and_tokenizer
    with BackgroundServer(create_app(Engine(model, tok, max_queue=0), MODEL)) as srv:  # every request waits
        r = post(srv, GOOD)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "overloaded"


@pytest.fixture(scope="module")
def long_server(model_and_tokenizer):
    """A random tiny model with a 64k context: its replies run for minutes unless cancelled."""
    from minimind_hf import MiniMindConfig, MiniMindForCausalLM

    _, tok = model_and_tokenizer
    model = MiniMindForCausalLM(
        MiniMindConfig.from_preset("tiny", vocab_size=len(tok), max_position_embeddings=65536)
    ).eval()
    engine = Engine(model, tok, max_batch_size=4)
    with BackgroundServer(create_app(engine, MODEL, max_body_bytes=1_000_000)) as srv:
        srv.engine = engine
        yield srv


def test_bodies_over_the_limit_are_refused_before_they_are_read(long_server):
    big = b'{"model": "tiny-chat", "messages": [{"role": "user", "content": "' + b"x" * 5_000_000 + b'"}]}'
    r = httpx.post(long_server.url + "/v1/chat/completions", content=big, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    r = httpx.post(long_server.url + "/v1/chat/completions", content=chunked(), timeout=30)
    assert r.status_code == 413 and "1000000 bytes" in r.json()["error"]["message"]


def test_health_stays_fast_while_hostile_bodies_arrive(long_server):
    import statistics
    import threading

    big = b"[" + b"1," * 2_500_000 + b"1]"  # 5 MB
    stop = threading.Event()

    def hostile():
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                c.post(long_server.url + "/v1/chat/completions", content=big)
                c.post(long_server.url + "/v1/chat/completions", content=iter([big[:700_000]] * 8))

    attackers = [threading.Thread(target=hostile) for _ in range(2)]
    for t in attackers:
        t.start()
    latencies = []
    try:
        with httpx.Client(timeout=10) as c:
            for _ in range(60):
                start = time.perf_counter()
                assert c.get(long_server.url + "/health").status_code == 200
                latencies.append(time.perf_counter() - start)
                time.sleep(0.01)
    finally:
        stop.set()
        for t in attackers:
            t.join(30)
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.1, f"/health p99 {p99 * 1000:.0f} ms while 5 MB bodies were being refused"


def test_a_conversation_too_long_by_its_bytes_is_refused_before_tokenising(server):
    content = "长" * 100_000  # 300 kB: however it tokenises, far more than the 384-token context
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": content}]},
        timeout=30,
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "at least" in error["message"]  # the byte bound answered, not the tokenizer


def test_a_non_streamed_request_is_cancelled_when_its_client_leaves(long_server):
    engine = long_server.engine
    body = {"model": MODEL, "messages": CASES["hello"].messages(), "max_tokens": 60_000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(long_server.url + "/v1/chat/completions", json=body, timeout=1.5)
    deadline = time.monotonic() + 10
    while engine._active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine._active, "the orphaned request kept generating"
    steps = engine.steps
    time.sleep(0.5)
    assert engine.steps == steps


def test_tool_choice_required_and_named_force_a_valid_call(client):
    """The 'hello' conversation is memorised as a plain reply; with tool_choice required (or the function
    named) constrained decoding makes it a call whose arguments match the tool's schema."""
    import jsonschema

    calculator = {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    }
    for tools, choice, names in (  # one tool each: the 384-token context holds one schema and the reply
        ([WEATHER_TOOL], "required", {"get_weather"}),
        ([calculator], {"type": "function", "function": {"name": "add"}}, {"add"}),
    ):
        r = client.chat.completions.create(
            model=MODEL, messages=CASES["hello"].messages(), tools=tools, tool_choice=choice, temperature=0,
        )  # fmt: skip
        choice0 = r.choices[0]
        assert choice0.finish_reason == "tool_calls", choice0
        for call in choice0.message.tool_calls:
            assert call.function.name in names
            spec = next(t for t in tools if t["function"]["name"] == call.function.name)
            jsonschema.validate(json.loads(call.function.arguments), spec["function"]["parameters"])


def test_a_required_call_may_be_to_any_offered_tool_and_nothing_else(model_and_tokenizer):
    """The grammar for several tools, checked token by token against texts: each offered tool's call is
    accepted to the end; an unknown name or arguments off the schema are masked out."""
    from minimind_hf.serve.constrained import GrammarCompiler, build_grammar

    _, tok = model_and_tokenizer
    add = {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}  # fmt: skip
    compiler = GrammarCompiler(tok, len(tok))
    grammar = build_grammar(tok, call_tools=[WEATHER_TOOL, add], calls_required=True)

    def accepts(text: str) -> tuple[bool, bool]:
        """(every token allowed, the reply may end here)"""
        constraint = compiler.compile(grammar)
        for token in tok.encode(text, add_special_tokens=False):
            if not constraint.allowed()[token]:
                return False, False
            constraint.consume(token)
        return True, constraint.matcher.is_accepting()

    weather = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    adding = '<tool_call>\n{"name": "add", "arguments": {"a": 2}}\n</tool_call>'
    assert accepts(weather) == accepts(adding) == accepts(weather + "\n" + adding) == (True, True)
    assert accepts(weather[: weather.index("}}") + 2]) == (True, False)  # the block is not closed yet
    assert accepts('<tool_call>\n{"name": "delete_all"')[0] is False
    assert accepts('<tool_call>\n{"name": "add", "arguments": {"a": "two"')[0] is False
    assert accepts("Sure, let me check.")[0] is False


def test_response_format_json_schema_and_json_object(client):
    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": 12},
            "confidence": {"type": "integer", "minimum": 0, "maximum": 9},
            "mood": {"enum": ["calm", "happy"]},
        },
        "required": ["answer", "confidence", "mood"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=MODEL, messages=CASES["hello"].messages(), temperature=0, max_tokens=150,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "reply", "schema": schema, "strict": True}},
    )  # fmt: skip
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    stream = client.chat.completions.create(
        model=MODEL, messages=CASES["count"].messages(), temperature=0, max_tokens=150, stream=True,
        response_format={"type": "json_object"},
    )  # fmt: skip
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tool_choice": "required"}, "tool_choice"),  # no tools to call
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        (
            {"response_format": {"type": "json_object"}, "chat_template_kwargs": {"open_thinking": True}},
            "response_format",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
                }
            },
            "response_format",
        ),
    ],
)
def test_constraints_that_cannot_apply_are_400s_naming_the_field(server, extra, param):
    body = {"model": MODEL, "messages": CASES["hello"].messages(), **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@torch.no_grad()
def reference_logprobs(model, ids: list[int], reply: list[int]) -> torch.Tensor:
    """log p(reply[i] | ids + reply[:i]) from one forward of the model (no cache, no engine)."""
    logits = model(torch.tensor([ids + reply]), use_cache=False).logits[0, len(ids) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(reply)[:, None])[:, 0]


def test_assistant_messages_copied_back_from_a_response_are_accepted(client):
    """A client that appends the response's message as is (refusal/annotations/audio null, vLLM's
    `reasoning`) gets a reply; the reasoning reaches the template as reasoning_content."""
    first = client.chat.completions.create(model=MODEL, messages=CASES["hello"].messages(), temperature=0)
    echoed = {**first.choices[0].message.model_dump(), "reasoning": "thought about it"}
    messages = [*CASES["hello"].messages(), echoed, {"role": "user", "content": "Say hello please."}]
    r = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=5)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_chat_logprobs_match_the_models_own_forward(client, model_and_tokenizer):
    from minimind_hf.serve.chat import encode_chat_prompt

    model, tok = model_and_tokenizer
    case = CASES["hello"]
    r = client.chat.completions.create(
        model=MODEL, messages=case.messages(), temperature=0, logprobs=True, top_logprobs=3
    )
    entries = r.choices[0].logprobs.content
    assert b"".join(bytes(e.bytes) for e in entries).decode() == r.choices[0].message.content == case.content
    reply = tok(case.content, add_special_tokens=False)["input_ids"]
    ids = encode_chat_prompt(tok, case.messages())[1]
    assert len(entries) == len(reply)
    want = reference_logprobs(model, ids, reply)
    assert torch.allclose(torch.tensor([e.logprob for e in entries]), want, atol=1e-4)
    for e in entries:  # greedy: the token drawn is the most likely one; alternatives best first
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert [a.logprob for a in e.top_logprobs] == sorted(
            (a.logprob for a in e.top_logprobs), reverse=True
        )
    stream = client.chat.completions.create(
        model=MODEL, messages=case.messages(), temperature=0, logprobs=True, top_logprobs=3, stream=True
    )
    streamed = [
        e for ch in stream if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content
    ]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]


def test_n_choices_have_their_own_seeds(client):
    kwargs = dict(model=MODEL, messages=CASES["hello"].messages(), temperature=1.5, max_tokens=12, seed=7)
    three = client.chat.completions.create(n=3, **kwargs)
    again = client.chat.completions.create(n=3, **kwargs)
    texts = [c.message.content for c in sorted(three.choices, key=lambda c: c.index)]
    assert [c.index for c in sorted(three.choices, key=lambda c: c.index)] == [0, 1, 2]
    assert texts == [c.message.content for c in sorted(again.choices, key=lambda c: c.index)]
    assert len(set(texts)) > 1
    second = client.chat.completions.create(**{**kwargs, "seed": 8})  # choice 1 is seed 7 + 1
    assert second.choices[0].message.content == texts[1]
    assert three.usage.prompt_tokens == second.usage.prompt_tokens  # counted once, not per choice
    stream = client.chat.completions.create(n=3, stream=True, **kwargs)
    parts = {0: "", 1: "", 2: ""}
    for ch in stream:
        for c in ch.choices:
            parts[c.index] += c.delta.content or ""
    assert [parts[i] for i in range(3)] == texts


def test_text_completions_through_the_openai_client(client, model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompt = "Hello! How can"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=6, min_new_tokens=6, do_sample=False)
    want_ids = out[0, len(ids) :].tolist()
    r = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=2, extra_body={"ignore_eos": True}
    )
    choice = r.choices[0]
    assert r.object == "text_completion" and choice.finish_reason == "length"
    assert choice.text == tok.decode(want_ids, skip_special_tokens=True)
    want = reference_logprobs(model, ids, want_ids)
    assert torch.allclose(torch.tensor(choice.logprobs.token_logprobs), want, atol=1e-4)
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 6
    # echo, token-id prompts, a batch of prompts times n, streaming
    echoed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, echo=True,
                                       extra_body={"ignore_eos": True})  # fmt: skip
    assert echoed.choices[0].text == prompt + choice.text
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=6, temperature=0,
                                       extra_body={"ignore_eos": True})  # fmt: skip
    assert by_ids.choices[0].text == choice.text
    batch = client.completions.create(
        model=MODEL, prompt=[prompt, "one two"], n=2, max_tokens=4, temperature=0
    )
    by_index = {c.index: c.text for c in batch.choices}
    assert sorted(by_index) == [0, 1, 2, 3]  # prompt i's n choices are indices i*n .. i*n+n-1
    assert by_index[0] == by_index[1] == tok.decode(want_ids[:4], skip_special_tokens=True)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL,
            prompt=prompt,
            max_tokens=6,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        if c.choices
    )
    assert streamed == choice.text


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"suffix": "x"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"echo": True, "logprobs": 1}, "echo"),
        ({"prompt": [1, 2, 10**9]}, "prompt"),
        ({"logit_bias": {"5": 1}}, "logit_bias"),
        ({"max_tokens": 10_000}, "max_tokens"),
    ],
)
def test_text_completion_refusals_name_the_field(server, extra, param):
    body = {"model": MODEL, "prompt": "Hello", **extra}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_what_the_original_minimind_client_sends(model_and_tokenizer):
    """issue 14 E: the original's scripts/chat_api.py names the model "minimind-local:latest" and switches
    thinking with chat_template_kwargs plus reasoning_effort; its server took a top-level open_thinking."""
    model, tok = model_and_tokenizer
    with BackgroundServer(create_app(Engine(model, tok), MODEL, aliases=["minimind-local:latest"])) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-123", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == [MODEL, "minimind-local:latest"]
        case = CASES["reason"]
        for extra in (
            {"chat_template_kwargs": {"open_thinking": True}, "reasoning_effort": "medium"},  # chat_api.py
            {"open_thinking": True},  # the original server's field
            {"reasoning_effort": "high"},
        ):
            r = client.chat.completions.create(
                model="minimind-local:latest", messages=case.messages(), temperature=0, extra_body=extra
            )
            assert r.model == "minimind-local:latest"
            assert r.choices[0].message.reasoning_content == case.reasoning, extra
        hello = CASES["hello"]
        off = client.chat.completions.create(
            model=MODEL, messages=hello.messages(), temperature=0, extra_body={"reasoning_effort": "none"}
        )
        assert off.choices[0].message.content == hello.content
        body = {
            "model": MODEL,
            "messages": hello.messages(),
            "open_thinking": True,
            "reasoning_effort": "none",
        }
        r = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 400 and "thinking switches disagree" in r.json()["error"]["message"]
        plain = {"model": MODEL, "messages": hello.messages()}
        for bad, param in (
            ({"open_thinking": "yes"}, "open_thinking"),
            ({"reasoning_effort": "max"}, "reasoning_effort"),
        ):
            r = httpx.post(srv.url + "/v1/chat/completions", json={**plain, **bad}, timeout=30)
            assert r.status_code == 400 and (r.json()["error"]["param"] or "").startswith(param), r.text
