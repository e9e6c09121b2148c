"""Every provider kind that speaks OpenAI's wire format, end to end.

The official ``openai`` SDK → the gateway (uvicorn, loopback) → a fake upstream, for the
kinds ``openai`` and ``openai_compatible`` (the OpenAI fake, reached at another api_base)
and ``azure`` (the Azure fake: deployment URLs, ``api-key``, ``api-version``, Azure's extra
stream chunk). The fakes validate every body against the openai SDK's types and check that
tool results answer tool calls, so a wrong forward fails there as a 400.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openai
import pytest

from apps.gateway.providers.azure.adapter import DEFAULT_API_VERSION
from apps.gateway.providers.openai.translate import (
    OpenAIStreamTranslator,
    public_model_field,
    with_public_model,
)
from fakes.azure_server import FakeAzureOpenAIServer
from fakes.openai_server import TOOL_ARGUMENTS, FakeOpenAIServer
from tests.factories import key_create, model_create, provider_create, records_wait
from tests.gateway.tool_calls import WEATHER_TOOL

UPSTREAM_KEY = "sk-upstream-wire"
CHAT_PRICE = (Decimal("0.15"), Decimal("0.60"))
EMBED_PRICE = Decimal("0.02")
MESSAGES = [{"role": "user", "content": "Say hello to the gateway, please."}]


@dataclass
class Wire:
    """One provider kind wired up: the client, the fake behind the gateway, what to expect."""

    kind: str
    gateway: Any
    client: openai.OpenAI
    upstream: FakeOpenAIServer
    secret: str

    def expected_path(self, upstream_model: str, operation: str) -> str:
        if self.kind == "azure":
            return f"/openai/deployments/{upstream_model}/{operation}"
        return f"/v1/{operation}"

    def check_sent(self, sent: dict[str, Any], upstream_model: str, operation: str) -> None:
        """The upstream got the right URL, credential and model, never the virtual key."""
        assert sent["path"] == self.expected_path(upstream_model, operation)
        assert sent["json"]["model"] == upstream_model
        headers = sent["headers"]
        if self.kind == "azure":
            assert sent["query"] == {"api-version": DEFAULT_API_VERSION}
            assert headers["api-key"] == UPSTREAM_KEY and "authorization" not in headers
        else:
            assert sent["query"] == {}
            assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
            assert "api-key" not in headers
        assert self.secret not in str(sent)


@pytest.fixture(params=["openai", "openai_compatible", "azure"])
def wire(request, gateway) -> Iterator[Wire]:
    kind = request.param
    if kind == "azure":
        upstream: FakeOpenAIServer = FakeAzureOpenAIServer(
            api_key=UPSTREAM_KEY, deployments=["up-chat", "up-embed"]
        )
    else:
        upstream = FakeOpenAIServer(api_key=UPSTREAM_KEY)
    upstream.start()
    # openai_compatible: the same kind of server, named by host name rather than address.
    api_base = (
        upstream.url.replace("127.0.0.1", "localhost")
        if kind == "openai_compatible"
        else upstream.url
    )
    provider = provider_create(
        api_base, kind=kind, name=f"{kind.replace('_', '-')}-up", api_key=UPSTREAM_KEY
    )
    model_create(
        "chat-model",
        provider,
        upstream_model="up-chat",
        input_per_mtok=str(CHAT_PRICE[0]),
        output_per_mtok=str(CHAT_PRICE[1]),
    )
    model_create(
        "embed-model",
        provider,
        upstream_model="up-embed",
        input_per_mtok=str(EMBED_PRICE),
        output_per_mtok="0",
    )
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    try:
        yield Wire(kind, gateway, client, upstream, issued.secret)
    finally:
        upstream.stop()


def chat_cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * CHAT_PRICE[0] + output_tokens * CHAT_PRICE[1]) / Decimal(1_000_000)


def test_chat_and_embeddings(wire: Wire) -> None:
    wire.upstream.behavior.completion_tokens = 5

    reply = wire.client.chat.completions.create(model="chat-model", messages=MESSAGES)

    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 5 and reply.usage.prompt_tokens > 1
    wire.check_sent(wire.upstream.requests[-1], "up-chat", "chat/completions")
    assert wire.upstream.requests[-1]["json"]["messages"] == MESSAGES

    result = wire.client.embeddings.create(
        model="embed-model", input=["alpha beta gamma", "delta"], encoding_format="float"
    )

    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens == 16 // 4 + 1  # the fake: chars // 4, at least 1 each
    wire.check_sent(wire.upstream.requests[-1], "up-embed", "embeddings")

    chat, embeddings = records_wait(wire.gateway, 2)
    assert chat.status_code == 200 and chat.deployment.endswith(":up-chat")
    assert (chat.input_tokens, chat.output_tokens) == (reply.usage.prompt_tokens, 5)
    assert not chat.usage_estimated
    assert chat.cost_usd == chat_cost(chat.input_tokens, 5) > 0
    assert embeddings.endpoint == "embeddings" and embeddings.status_code == 200
    assert (embeddings.input_tokens, embeddings.output_tokens) == (result.usage.prompt_tokens, 0)
    assert embeddings.cost_usd == result.usage.prompt_tokens * EMBED_PRICE / Decimal(1_000_000)


def test_streaming_with_include_usage(wire: Wire) -> None:
    wire.upstream.behavior.completion_tokens = 7

    chunks = list(
        wire.client.chat.completions.create(
            model="chat-model",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == [f"tok{i}" for i in range(7)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 7
    leading = chunks[0].model_extra or {}
    assert ("prompt_filter_results" in leading) == (wire.kind == "azure")  # passed through
    sent = wire.upstream.requests[-1]
    wire.check_sent(sent, "up-chat", "chat/completions")
    assert sent["json"]["stream"] is True
    assert sent["json"]["stream_options"] == {"include_usage": True}
    [record] = records_wait(wire.gateway, 1)
    assert record.stream and record.status_code == 200 and not record.usage_estimated
    assert (record.input_tokens, record.output_tokens) == (usage.prompt_tokens, 7)
    assert record.cost_usd == chat_cost(usage.prompt_tokens, 7)
    assert record.ttft_ms is not None and record.ttft_ms <= record.latency_ms


def _ask(wire: Wire, messages: list[dict[str, Any]], *, stream: bool) -> dict[str, Any]:
    """One chat call with the weather tool; the answer rebuilt from chunks when streamed."""
    if not stream:
        reply = wire.client.chat.completions.create(
            model="chat-model", messages=messages, tools=[WEATHER_TOOL]
        )
        message = reply.choices[0].message
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in message.tool_calls or []
        ]
        return {
            "content": message.content,
            "calls": calls,
            "finish": reply.choices[0].finish_reason,
            "usage": reply.usage,
        }
    chunks = list(
        wire.client.chat.completions.create(
            model="chat-model",
            messages=messages,
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    pieces = [d.tool_calls[0] for d in deltas if d.tool_calls]
    calls = []
    if pieces:  # the first delta names the call, the others carry argument pieces
        arguments = "".join(p.function.arguments or "" for p in pieces)
        calls = [{"id": pieces[0].id, "name": pieces[0].function.name, "arguments": arguments}]
    content = "".join(d.content or "" for d in deltas)
    return {
        "content": content or None,
        "calls": calls,
        "finish": [c.choices[0].finish_reason for c in chunks if c.choices][-1],
        "usage": chunks[-1].usage,
    }


def test_tool_call_round_trip(wire: Wire) -> None:
    """Non-streamed, then streamed: the call, then the follow-up carrying its result."""
    wire.upstream.behavior.completion_tokens = 3
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    usages = []
    for stream in (False, True):
        first = _ask(wire, question, stream=stream)
        assert first["finish"] == "tool_calls" and first["content"] is None
        [call] = first["calls"]
        assert call["id"].startswith("call_") and call["name"] == "get_weather"
        assert call["arguments"] == TOOL_ARGUMENTS
        assert json.loads(call["arguments"]) == {"city": "Paris"}
        assert wire.upstream.requests[-1]["json"]["tools"] == [WEATHER_TOOL]

        result = {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C"}
        follow_up = [
            *question,
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
            result,
        ]
        answer = _ask(wire, follow_up, stream=stream)
        assert answer["finish"] == "stop" and answer["calls"] == []
        assert answer["content"] == "tok0 tok1 tok2"
        sent = wire.upstream.requests[-1]
        wire.check_sent(sent, "up-chat", "chat/completions")
        assert sent["json"]["messages"][-1] == result
        assert sent["json"]["messages"][1]["tool_calls"][0]["id"] == call["id"]
        usages += [first["usage"], answer["usage"]]

    records = records_wait(wire.gateway, 4)
    assert [(r.stream, r.status_code) for r in records] == [
        (False, 200),
        (False, 200),
        (True, 200),
        (True, 200),
    ]
    for record, usage in zip(records, usages, strict=True):
        assert (record.input_tokens, record.output_tokens) == (usage.prompt_tokens, 3)
        assert record.cost_usd == chat_cost(usage.prompt_tokens, 3)
        assert not record.usage_estimated
    assert records[1].input_tokens > records[0].input_tokens  # the tool result is input too


# ---- the public model name in pass-through answers (pure)

PUBLIC = public_model_field("m")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id":"c","model":"gpt-4o-mini-2024-07-18","x":1}', b'{"id":"c","model":"m","x":1}'),
        (b'{"id": "c", "model" : "dep\\"1", "x": 1}', b'{"id": "c", "model":"m", "x": 1}'),
        # The word inside a string (escaped quotes) is content, not the member.
        (
            b'{"c":"say \\"model\\": \\"x\\"","model":"up"}',
            b'{"c":"say \\"model\\": \\"x\\"","model":"m"}',
        ),
        # A key ending in an escaped quote and "model" is not the member either.
        (b'{"k\\"model":"v","model":"up"}', b'{"k\\"model":"v","model":"m"}'),
        (b'{"error":{"message":"no"}}', b'{"error":{"message":"no"}}'),
    ],
)
def test_with_public_model_renames_only_the_member(body: bytes, expected: bytes) -> None:
    assert with_public_model(body, PUBLIC) == expected
    assert with_public_model(body, PUBLIC, last=True) == expected


def test_with_public_model_escapes_the_public_name() -> None:
    renamed = with_public_model(b'{"model":"up"}', public_model_field('a"b'))
    assert json.loads(renamed) == {"model": 'a"b'}


def test_embeddings_model_found_from_the_end() -> None:
    body = json.dumps(
        {"object": "list", "data": [{"embedding": [0.5] * 64}], "model": "text-embedding-3-small"}
    ).encode()
    assert json.loads(with_public_model(body, PUBLIC, last=True))["model"] == "m"


def test_stream_translator_renames_every_chunk_and_keeps_the_rest() -> None:
    translator = OpenAIStreamTranslator(include_usage=True, public_model="pub")
    chunk = b'data: {"id":"c","model":"gpt-4o-2024-08-06","choices":[{"delta":{"content":"%d"}}]}'
    out = [translator.feed_event(chunk % i) for i in range(3)]
    out.append(
        translator.feed_event(
            b'data: {"id":"c","model":"gpt-4o-2024-08-06","choices":[],'
            b'"usage":{"prompt_tokens":2,"completion_tokens":3}}'
        )
    )
    out.append(translator.feed_event(b'data: {"error":{"message":"boom"}}'))
    out.append(translator.feed_event(b"data: [DONE]"))
    events = [json.loads(e[6:]) for e in out[:-1]]
    assert [e.get("model") for e in events] == ["pub"] * 4 + [None]
    assert [e["choices"][0]["delta"]["content"] for e in events[:3]] == ["0", "1", "2"]
    assert translator.usage == {"prompt_tokens": 2, "completion_tokens": 3}
    assert out[-1] == b"data: [DONE]\n\n" and translator.finished
