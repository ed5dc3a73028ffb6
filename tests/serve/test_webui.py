"""The Gradio chat page, driven by the real `gradio_client` over HTTP on localhost."""

from __future__ import annotations

import json

import gradio_client
import pytest
from _serve_helpers import CASES, WEATHER_TOOL, free_port, weather_tool

from minimind_hf.serve.engine import Engine

# gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


@pytest.fixture(scope="module")
def page(model_and_tokenizer):
    from minimind_hf.serve.webui import launch

    model, tok = model_and_tokenizer
    with Engine(model, tok) as engine:
        port = free_port()
        demo = launch(engine, "tiny-chat", host="127.0.0.1", port=port, block=False)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


def test_page_streams_folded_thinking_and_answer(page):
    job = gradio_client.Client(page, verbose=False).submit(
        CASES["reason"].user, True, "", "", 0.0, 200, api_name="/chat"
    )
    updates = list(job)
    final = job.outputs()[-1]
    assert len(updates) > 5, "the reply should stream in many updates"
    thinking, answer = final
    assert thinking["metadata"]["title"] == "Thinking" and thinking["metadata"]["status"] == "done"
    assert thinking["content"] == CASES["reason"].reasoning
    assert answer["content"] == CASES["reason"].content and not answer["metadata"].get("title")
    # while streaming, the thinking panel is shown as still in progress
    assert any(u[0]["metadata"].get("status") == "pending" for u in updates[:-1])


def test_page_shows_tool_calls(page):
    client = gradio_client.Client(page, verbose=False)  # a new session: empty chat history
    final = client.predict(
        CASES["tool"].user, False, json.dumps([WEATHER_TOOL]), "", 0.0, 60, api_name="/chat"
    )
    (call,) = final
    assert call["metadata"]["title"] == "Tool call: get_weather"
    assert json.loads(call["content"].removeprefix("```json").removesuffix("```")) == {"city": "Paris"}
    # the same session again: the history (with the tool call) no longer fits the tiny context -> a clear
    # error
    with pytest.raises(Exception, match="context"):
        client.predict(CASES["tool"].user, False, json.dumps([WEATHER_TOOL]), "", 0.0, 60, api_name="/chat")


def test_page_runs_tools_and_continues(model_and_tokenizer):
    """`webui --run-tools`: the page runs the call, shows the response folded, and the model continues."""
    from minimind_hf.serve.webui import history_to_messages, launch

    calls, get_weather = weather_tool()

    model, tok = model_and_tokenizer
    with Engine(model, tok) as engine:
        port = free_port()
        demo = launch(engine, "tiny-chat", port=port, block=False, run_tools={"get_weather": get_weather})
        try:
            client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
            final = client.predict(
                CASES["tool"].user, False, json.dumps([WEATHER_TOOL]), "", 0.0, 60, api_name="/chat"
            )
        finally:
            demo.close()
    assert calls == ["Paris"]
    call, result, *rest = final
    assert call["metadata"]["title"] == "Tool call: get_weather"
    assert result["metadata"]["title"] == "Tool result: get_weather" and result["content"] == "sunny, 18 C"
    assert result["metadata"]["status"] == "done"  # shown folded
    # the model went on after the response: another round, or (this fixture's 384-token context) a clean stop
    assert rest, final
    if rest[-1]["content"].startswith("[stopped:"):  # said on the page, the panels so far kept
        assert "the context is 384" in rest[-1]["content"]
    else:
        assert not rest[-1]["metadata"].get("title")  # the model's reply after the tool response
    messages = history_to_messages([{"role": "user", "content": CASES["tool"].user}, call, result])
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2]["content"] == "sunny, 18 C"


def test_history_conversion_keeps_tool_calls_and_drops_thinking():
    from minimind_hf.serve.webui import history_to_messages

    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hmm", "metadata": {"title": "Thinking"}},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": '```json\n{"city": "Paris"}\n```',
            "metadata": {"title": "Tool call: get_weather"},
        },
    ]
    assert history_to_messages(history) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
    ]


def test_one_options_accordion_holding_the_inputs_and_a_slider_default_that_fits(model_and_tokenizer):
    """Regressions from a user's first look: an empty 'Options' accordion at the top of the page, and a
    max-new-tokens default above the slider's maximum for contexts <= 512 (the first message failed)."""
    from minimind_hf.serve.webui import build_demo

    model, tok = model_and_tokenizer
    with Engine(model, tok) as engine:
        config = build_demo(engine, max_tokens=512).get_config_file()
    accordions = {c["id"] for c in config["components"] if c.get("type") == "accordion"}

    def nodes(node):
        yield node
        for child in node.get("children", []):
            yield from nodes(child)

    placed = [n for n in nodes(config["layout"]) if n["id"] in accordions]
    assert len(placed) == 1 and placed[0].get("children"), placed
    slider = next(c for c in config["components"] if c.get("props", {}).get("label") == "Max new tokens")
    assert slider["props"]["value"] <= slider["props"]["maximum"] == engine.context_length - 1


def test_a_message_sent_at_the_page_defaults_gets_a_reply(page, model_and_tokenizer):
    """Only the message, every option at the page's default (max new tokens 512 asked for, on this
    384-token model): the first message of a user who changes nothing is answered."""
    model, _ = model_and_tokenizer
    assert model.config.max_position_embeddings == 384
    final = gradio_client.Client(page, verbose=False).predict(CASES["hello"].user, api_name="/chat")
    assert final and final[-1]["content"].strip()
