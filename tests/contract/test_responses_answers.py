"""``POST /v1/responses`` against OpenAI's published spec, for every provider kind: the
``Response`` object (text and function calls) and every event of its stream
(``ResponseStreamEvent``: each named after its ``type``, numbered in order, ending with
``response.completed`` whose response is a valid ``Response``), the ``error`` +
``response.failed`` ending of a stream the upstream cut, and error bodies.

Skipped where the Responses door is not built yet (it lands from its own branch)."""

from __future__ import annotations

import openai
import pytest

from apps.gateway.providers.registry import PROVIDERS
from tests.contract.conftest import MAX_BODY_BYTES, one_attempt
from tests.contract.shapes import assert_openai
from tests.contract.test_errors import AWS_KEY, check_refusal, send_refusal
from tests.contract.test_guardrail_shapes import CUT, EMAIL, REDACTED
from tests.contract.wire import sse_events

pytest.importorskip(
    "apps.gateway.inbound.openai_responses", reason="POST /v1/responses is not on this branch"
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}
ASK_WEATHER = "What's the weather in Paris?"


def _client(gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)


def _stream(client: openai.OpenAI, **body) -> list[tuple[str | None, dict]]:
    with client.responses.with_streaming_response.create(
        model="m", stream=True, **body
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_events(response.iter_lines())


def assert_response_events(events: list[tuple[str | None, dict]], kind: str) -> None:
    """Every event a valid ``ResponseStreamEvent`` named after its type, numbered 0, 1,
    2…; the response in the first and last events a valid ``Response``."""
    assert events, "an empty stream"
    for number, (name, data) in enumerate(events):
        assert name == data.get("type"), (name, data)
        assert data.get("sequence_number") == number, (number, data)
        assert_openai("ResponseStreamEvent", data, kind)
        if "response" in data:
            assert_openai("Response", data["response"], kind)


def test_responses_and_their_stream_events_match_the_spec(routed):
    kind, gateway, secret, _server = routed
    client = _client(gateway, secret)

    text = client.responses.with_raw_response.create(model="m", input="Hi").http_response
    assert_openai("Response", text.json(), kind)
    assert text.json()["status"] == "completed" and text.json()["model"] == "m"

    tool = client.responses.with_raw_response.create(
        model="m", input=ASK_WEATHER, tools=[WEATHER]
    ).http_response.json()
    assert [item["type"] for item in tool["output"]][-1] == "function_call"
    assert_openai("Response", tool, kind)

    for body, item_type in (
        (dict(input="Hi"), "message"),
        (dict(input=ASK_WEATHER, tools=[WEATHER]), "function_call"),
    ):
        events = _stream(client, **body)
        assert_response_events(events, kind)
        names = [name for name, _ in events]
        assert names[0] == "response.created" and names[-1] == "response.completed"
        final = events[-1][1]["response"]
        assert final["usage"]["output_tokens"] > 0
        assert final["output"][-1]["type"] == item_type
        if item_type == "function_call":
            assert "response.function_call_arguments.delta" in names
        else:
            assert "response.output_text.delta" in names


@pytest.mark.parametrize("status", [500, 429])
def test_upstream_failures_are_openai_errors(routed, status):
    _kind, gateway, secret, server = routed
    one_attempt(gateway)
    server.behavior.fail_status = status
    with pytest.raises(openai.APIStatusError) as info:
        _client(gateway, secret).responses.create(model="m", input="Hi")
    assert info.value.status_code in (429, 502, 503, 504)
    assert_openai("ErrorResponse", info.value.response.json())


def test_a_stream_cut_by_the_upstream_ends_with_error_and_response_failed(routed):
    kind, gateway, secret, server = routed
    server.behavior.completion_tokens = 10
    server.behavior.disconnect_after_chunks = 3
    events = _stream(_client(gateway, secret), input="Hi")
    assert_response_events(events, kind)
    names = [name for name, _ in events]
    assert names[-2:] == ["error", "response.failed"], names


# (id, key, body, status, OpenAI code), on POST /v1/responses of the ``refusals`` gateway.
RESPONSES_CASES = [
    (
        "bad-type",
        "ok",
        {"model": "alpha", "input": "Hi", "temperature": "warm"},
        400,
        "invalid_type",
    ),
    (
        "unknown-previous",
        "ok",
        {"model": "alpha", "input": "Hi", "previous_response_id": "resp_" + "0" * 24},
        404,
        "not_found",
    ),
    ("no-key", None, {"model": "alpha", "input": "Hi"}, 401, "missing_api_key"),
    ("not-allowed", "narrow", {"model": "alpha", "input": "Hi"}, 403, "model_not_allowed"),
    ("unknown-model", "ok", {"model": "nope", "input": "Hi"}, 404, "model_not_found"),
    (
        "too-large",
        "ok",
        {"model": "alpha", "input": "x" * MAX_BODY_BYTES},
        413,
        "request_too_large",
    ),
    ("rate-limited", "limited", {"model": "alpha", "input": "Hi"}, 429, "rate_limit_exceeded"),
    ("over-budget", "broke", {"model": "alpha", "input": "Hi"}, 429, "budget_exceeded"),
    (
        "guardrail",
        "guarded",
        {"model": "alpha", "input": f"my key is {AWS_KEY}"},
        400,
        "guardrail_blocked",
    ),
]


@pytest.mark.parametrize(
    ("key", "body", "status", "code"),
    [case[1:] for case in RESPONSES_CASES],
    ids=[case[0] for case in RESPONSES_CASES],
)
def test_responses_refusals_are_openai_error_responses(refusals, key, body, status, code):
    response = send_refusal(refusals, "POST", "/v1/responses", key, body, anthropic=False)
    check_refusal(response, status, refusals.get(key, key) if key else None)
    assert_openai("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == code


def test_guardrail_changed_responses_keep_their_shape(refusals):
    client = openai.OpenAI(
        base_url=refusals["gateway"].url + "/v1", api_key=refusals["guarded"], max_retries=0
    )
    refusals["upstream"].behavior.reply = f"Write to {EMAIL} or to {EMAIL}."
    with client.responses.with_streaming_response.create(
        model="alpha", input="hi", stream=True
    ) as response:
        events = sse_events(response.iter_lines())
    assert_response_events(events, "openai")
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == REDACTED

    refusals["upstream"].behavior.reply = CUT
    with client.responses.with_streaming_response.create(
        model="alpha", input="hi", stream=True
    ) as response:
        events = sse_events(response.iter_lines())
    assert_response_events(events, "openai")
    assert [name for name, _ in events][-2:] == ["error", "response.failed"]


def test_a_built_in_tool_is_sent_natively_or_refused_naming_it(routed):
    """``web_search`` reaches a provider that runs it (the Responses API natively) and is
    refused by the others with a 400 naming it, never dropped."""
    kind, gateway, secret, _server = routed
    client = _client(gateway, secret)
    tools = [{"type": "web_search"}]
    if "openai.responses" in PROVIDERS[kind].native_formats:
        answer = client.responses.with_raw_response.create(model="m", input="Hi", tools=tools)
        assert_openai("Response", answer.http_response.json(), kind)
        return
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="m", input="Hi", tools=tools)
    body = info.value.response.json()
    assert_openai("ErrorResponse", body)
    assert (body["error"]["code"], body["error"]["param"]) == ("unsupported_parameter", "tools[0]")
