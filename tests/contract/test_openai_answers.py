"""Every answer shape of the OpenAI door, for every provider kind, against OpenAI's
published spec: chat completions (text and tool calls), each chunk of a stream (the
opening, content, tool-call deltas, the finish and the usage chunk), embeddings, the model
list and model object, and the error bodies of an upstream failure (before and during a
stream). The gateway runs on loopback in front of the fake that speaks each provider's
wire; the bytes are read through the openai SDK's raw-response door."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from tests.contract.conftest import one_attempt
from tests.contract.shapes import assert_openai
from tests.contract.wire import DONE, sse_events
from tests.gateway.tool_calls import WEATHER_TOOL

HI = [{"role": "user", "content": "Hi"}]
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]
# Kinds whose deployment of ``m`` has no embeddings API (a 400 instead, checked too).
NO_EMBEDDINGS = {"anthropic", "bedrock"}


def _client(gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)


def _stream(client: openai.OpenAI, include_usage: bool = True, **body) -> list:
    """The ``data`` of every event of a streamed chat completion, ``[DONE]`` included."""
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with client.chat.completions.with_streaming_response.create(
        model="m", stream=True, **body
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return [data for _name, data in sse_events(response.iter_lines())]


def _status_body(call) -> tuple[int, dict]:
    """Status and body of the error ``call`` raises (a 429 must say when to retry)."""
    with pytest.raises(openai.APIStatusError) as info:
        call()
    response = info.value.response
    if response.status_code == 429:
        assert int(response.headers["retry-after"]) >= 0
    return info.value.status_code, response.json()


def test_chat_completions_and_their_chunks_match_the_spec(routed):
    kind, gateway, secret, _server = routed
    client = _client(gateway, secret)

    text = client.chat.completions.with_raw_response.create(model="m", messages=HI)
    assert_openai("CreateChatCompletionResponse", text.http_response.json(), kind)

    tool = client.chat.completions.with_raw_response.create(
        model="m", messages=ASK_WEATHER, tools=[WEATHER_TOOL]
    ).http_response.json()
    assert tool["choices"][0]["message"]["tool_calls"], tool
    assert_openai("CreateChatCompletionResponse", tool, kind)

    for body, expect_tool in (
        (dict(messages=HI), False),
        (dict(messages=ASK_WEATHER, tools=[WEATHER_TOOL]), True),
    ):
        events = _stream(client, **body)
        assert events[-1] == DONE and DONE not in events[:-1]
        chunks = events[:-1]
        for chunk in chunks:
            assert_openai("CreateChatCompletionStreamResponse", chunk, kind)
        *answer, usage = chunks
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
        assert all(c["usage"] is None for c in answer if "usage" in c)
        finishes = [c["choices"][0]["finish_reason"] for c in answer if c["choices"]]
        assert finishes[-1] == ("tool_calls" if expect_tool else "stop")
        assert not any(finishes[:-1])
        deltas = [c["choices"][0]["delta"] for c in answer if c["choices"]]
        assert bool([d for d in deltas if d.get("tool_calls")]) == expect_tool
        assert_one_completion(chunks)
        assert_tool_call_deltas(deltas)

    # Without stream_options (the SDKs' default): no usage chunk, and no usage anywhere.
    *plain, done = _stream(client, include_usage=False, messages=HI)
    assert done == DONE and all(c["choices"] for c in plain)
    for chunk in plain:
        assert_openai("CreateChatCompletionStreamResponse", chunk, kind)
        assert chunk.get("usage") is None


def assert_one_completion(chunks: list[dict]) -> None:
    """What the spec says in prose: every chunk of a stream has the same id and
    ``created``, and (issue 14) names the public model."""
    assert len({c["id"] for c in chunks}) == 1, [c["id"] for c in chunks]
    assert len({c["created"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"m"}


def assert_tool_call_deltas(deltas: list[dict]) -> None:
    """A tool call's first delta carries its ``id``, ``type`` and function ``name`` (as
    OpenAI's do; the Vercel AI SDK refuses a stream without them), later ones only
    argument pieces, and the pieces join into JSON."""
    seen: dict[int, str] = {}
    for delta in deltas:
        for call in delta.get("tool_calls") or ():
            index = call["index"]
            if index not in seen:
                assert call.get("id") and call.get("type") == "function", call
                assert call["function"].get("name"), call
                seen[index] = ""
            else:
                assert "id" not in call or call["id"] in (None, ""), call
            seen[index] += call.get("function", {}).get("arguments") or ""
    for arguments in seen.values():
        json.loads(arguments)


def test_embeddings_and_models_match_the_spec(routed):
    kind, gateway, secret, _server = routed
    client = _client(gateway, secret)

    if kind in NO_EMBEDDINGS:
        status, body = _status_body(
            lambda: client.embeddings.create(model="m", input="hi", encoding_format="float")
        )
        assert status == 400
        assert_openai("ErrorResponse", body)
    else:
        floats = client.embeddings.with_raw_response.create(
            model="m", input=["a", "b"], encoding_format="float"
        ).http_response.json()
        assert_openai("CreateEmbeddingResponse", floats)
        # base64 (the openai SDK's default): each vector is little-endian float32 bytes.
        # The spec types ``embedding`` as floats only, so it is checked decoded, as the
        # SDK decodes it, and must be the float answer's vector.
        packed = client.embeddings.with_raw_response.create(
            model="m", input=["a", "b"], encoding_format="base64"
        ).http_response.json()
        for item in packed["data"]:
            assert isinstance(item["embedding"], str)
            raw = base64.b64decode(item["embedding"])
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        assert_openai("CreateEmbeddingResponse", packed)
        for got, want in zip(packed["data"], floats["data"], strict=True):
            assert got["embedding"] == pytest.approx(want["embedding"], rel=1e-6)

    listed = client.models.with_raw_response.list().http_response.json()
    assert [m["id"] for m in listed["data"]] == ["m"]
    assert_openai("ListModelsResponse", listed)
    assert_openai("Model", client.models.with_raw_response.retrieve("m").http_response.json())


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
@pytest.mark.parametrize("status", [500, 429])
def test_upstream_failures_are_openai_errors(routed, status, stream):
    """Before the first byte a stream fails like an answer: a JSON error, not SSE."""
    _kind, gateway, secret, server = routed
    one_attempt(gateway)
    server.behavior.fail_status = status
    client = _client(gateway, secret)
    got, body = _status_body(
        lambda: (
            list(client.chat.completions.create(model="m", messages=HI, stream=stream))
            if stream
            else client.chat.completions.create(model="m", messages=HI)
        )
    )
    assert got in (429, 502, 503, 504)
    assert_openai("ErrorResponse", body)


def test_a_stream_cut_by_the_upstream_ends_with_an_openai_error_event(routed):
    kind, gateway, secret, server = routed
    server.behavior.completion_tokens = 10
    server.behavior.disconnect_after_chunks = 3
    client = _client(gateway, secret)
    events = _stream(client, messages=HI)
    *chunks, last = events
    assert chunks and "error" in last, events
    for chunk in chunks:
        assert_openai("CreateChatCompletionStreamResponse", chunk, kind)
    assert_openai("ErrorResponse", last)
