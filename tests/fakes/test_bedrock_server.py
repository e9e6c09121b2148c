"""The fake Bedrock upstream, exercised through a real botocore ``bedrock-runtime`` client.

botocore signs with SigV4, serialises the REST JSON body, and decodes the binary
event stream; if it works against the fake, the gateway's tests against the fake are tests
against the real wire format. No database is needed.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from fakes.bedrock_server import (
    TOOL_INPUT,
    BedrockBehavior,
    FakeBedrockServer,
    add_cli_arguments,
    encode_event,
    validate_converse,
)

KEY_ID = "AKIDFAKETEST"
SECRET = "fake/secret+KEY"
REGION = "eu-west-1"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
HI = [{"role": "user", "content": [{"text": "hi"}]}]
WEATHER_TOOL = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
}
OTHER_TOOL = {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object"}}}}
NO_RETRIES = Config(retries={"total_max_attempts": 1}, read_timeout=10, connect_timeout=5)


def make_client(url: str, *, key_id: str = KEY_ID, secret: str = SECRET, region: str = REGION):
    return botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=NO_RETRIES,
    )


@pytest.fixture
def server() -> Iterator[FakeBedrockServer]:
    with FakeBedrockServer(access_key_id=KEY_ID, secret_access_key=SECRET, region=REGION) as fake:
        yield fake


@pytest.fixture
def client(server: FakeBedrockServer):
    return make_client(server.url)


def signed_post(
    server: FakeBedrockServer, path: str, body: bytes, *, secret: str = SECRET, **kwargs: Any
) -> httpx.Response:
    """POST exactly ``body`` to ``path`` (already percent-encoded), signed with botocore."""
    url = server.url + path
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(KEY_ID, secret), "bedrock", REGION).add_auth(request)
    return httpx.post(url, content=body, headers=dict(request.headers.items()), **kwargs)


def decode(raw: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [(m.headers, json.loads(m.payload)) for m in buffer]


# --------------------------------------------------------------------------- event stream


def test_encoded_frames_decode_with_botocore_even_byte_by_byte() -> None:
    frames = encode_event(
        {":event-type": "contentBlockDelta", ":message-type": "event"},
        b'{"delta":{"text":"h\xc3\xa9"}}',
    ) + encode_event({":event-type": "messageStop"}, b'{"stopReason":"end_turn"}')
    buffer = EventStreamBuffer()
    messages = []
    for byte in frames:  # split at every possible boundary
        buffer.add_data(bytes([byte]))
        messages.extend(buffer)
    assert [m.headers for m in messages] == [
        {":event-type": "contentBlockDelta", ":message-type": "event"},
        {":event-type": "messageStop"},
    ]
    assert json.loads(messages[0].payload) == {"delta": {"text": "hé"}}
    total, headers_length = struct.unpack(">II", frames[:8])
    assert total == len(frames) - len(
        encode_event({":event-type": "messageStop"}, b'{"stopReason":"end_turn"}')
    )
    assert headers_length == len(b"\x0b:event-type\x07\x00\x11contentBlockDelta") + len(
        b"\x0d:message-type\x07\x00\x05event"
    )
    corrupt = bytearray(frames)
    corrupt[20] ^= 0xFF
    bad = EventStreamBuffer()
    bad.add_data(bytes(corrupt))
    with pytest.raises(ChecksumMismatch):
        list(bad)


# --------------------------------------------------------------------------- converse


def test_converse_returns_text_and_usage(server: FakeBedrockServer, client: Any) -> None:
    server.behavior.completion_tokens = 5
    system, prompt = "be brief", "x" * 41
    answer = client.converse(
        modelId=MODEL,
        system=[{"text": system}],
        messages=[{"role": "user", "content": [{"text": prompt}]}],
        inferenceConfig={"maxTokens": 100, "temperature": 1, "topP": 0.5},
    )
    assert answer["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "tok0 tok1 tok2 tok3 tok4"}],
    }
    assert answer["stopReason"] == "end_turn"
    expected_input = (len(system) + len(prompt)) // 4
    assert answer["usage"] == {
        "inputTokens": expected_input,
        "outputTokens": 5,
        "totalTokens": expected_input + 5,
    }
    assert answer["metrics"]["latencyMs"] >= 0
    assert answer["ResponseMetadata"]["RequestId"]
    recorded = server.requests[-1]
    assert recorded["raw_path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert recorded["model_id"] == MODEL and recorded["operation"] == "converse"
    assert recorded["json"]["inferenceConfig"]["maxTokens"] == 100


def test_max_tokens_and_cache_usage(server: FakeBedrockServer, client: Any) -> None:
    server.behavior.cache_read_input_tokens = 50
    server.behavior.cache_write_input_tokens = 7
    answer = client.converse(modelId="m", messages=HI, inferenceConfig={"maxTokens": 3})
    assert answer["stopReason"] == "max_tokens"
    assert answer["output"]["message"]["content"][0]["text"].split() == ["tok0", "tok1", "tok2"]
    usage = answer["usage"]
    assert usage["cacheReadInputTokens"] == 50 and usage["cacheWriteInputTokens"] == 7
    assert usage["totalTokens"] == usage["inputTokens"] + 3 + 57


def test_converse_stream_event_sequence(
    server: FakeBedrockServer, client: Any, wait_for: Callable[..., bool]
) -> None:
    server.behavior.completion_tokens = 3
    response = client.converse_stream(modelId=MODEL, messages=HI)
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == (
        "application/vnd.amazon.eventstream"
    )
    events = list(response["stream"])
    assert [next(iter(e)) for e in events] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[0]["messageStart"] == {"role": "assistant"}
    texts = [e["contentBlockDelta"]["delta"]["text"] for e in events[1:4]]
    assert texts == ["tok0", " tok1", " tok2"]
    assert events[5]["messageStop"]["stopReason"] == "end_turn"
    assert events[6]["metadata"]["usage"] == {"inputTokens": 1, "outputTokens": 3, "totalTokens": 4}
    assert server.requests[-1]["operation"] == "converse-stream"
    assert wait_for(lambda: server.active_streams == 0)
    assert server.cancelled_streams == 0


def test_stream_payloads_carry_the_padding_field(server: FakeBedrockServer) -> None:
    body = json.dumps({"messages": HI}).encode()
    response = signed_post(server, "/model/m/converse-stream", body)
    assert response.status_code == 200
    messages = decode(response.content)
    assert all(h[":message-type"] == "event" for h, _ in messages)
    assert all(h[":content-type"] == "application/json" for h, _ in messages)
    assert all("p" in payload for _, payload in messages)


def test_tool_use_round_trip(server: FakeBedrockServer, client: Any) -> None:
    question = {"role": "user", "content": [{"text": "What's the weather in Paris?"}]}
    tools = {"tools": [WEATHER_TOOL, OTHER_TOOL]}
    first = client.converse(modelId="m", messages=[question], toolConfig=tools)
    assert first["stopReason"] == "tool_use"
    [block] = first["output"]["message"]["content"]
    call = block["toolUse"]
    assert call["toolUseId"].startswith("tooluse_") and call["name"] == "get_weather"
    assert call["input"] == dict(TOOL_INPUT)

    result = {"toolResult": {"toolUseId": call["toolUseId"], "content": [{"text": "18C"}]}}
    follow_up = [question, first["output"]["message"], {"role": "user", "content": [result]}]
    second = client.converse(modelId="m", messages=follow_up, toolConfig=tools)
    assert second["stopReason"] == "end_turn"
    assert second["output"]["message"]["content"][0]["text"].startswith("tok0")


def test_tool_choice_and_no_tool_without_weather(client: Any) -> None:
    plain = client.converse(modelId="m", messages=HI, toolConfig={"tools": [WEATHER_TOOL]})
    assert plain["stopReason"] == "end_turn"
    forced = client.converse(
        modelId="m",
        messages=HI,
        toolConfig={
            "tools": [WEATHER_TOOL, OTHER_TOOL],
            "toolChoice": {"tool": {"name": "get_time"}},
        },
    )
    assert forced["output"]["message"]["content"][0]["toolUse"]["name"] == "get_time"
    anything = client.converse(
        modelId="m", messages=HI, toolConfig={"tools": [OTHER_TOOL], "toolChoice": {"any": {}}}
    )
    assert anything["stopReason"] == "tool_use"


def test_tool_use_streams_input_pieces(client: Any) -> None:
    weather = [{"role": "user", "content": [{"text": "weather?"}]}]
    events = list(
        client.converse_stream(modelId="m", messages=weather, toolConfig={"tools": [WEATHER_TOOL]})[
            "stream"
        ]
    )
    start = events[1]["contentBlockStart"]
    assert start["contentBlockIndex"] == 0
    assert start["start"]["toolUse"]["name"] == "get_weather"
    pieces = [
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e
    ]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == dict(TOOL_INPUT)
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["tool_use"]


# --------------------------------------------------------------------------- authentication


def test_wrong_secret_is_an_invalid_signature(server: FakeBedrockServer) -> None:
    bad = make_client(server.url, secret="not-the-secret")
    with pytest.raises(ClientError) as err:
        bad.converse(modelId="m", messages=HI)
    error = err.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert error["Error"]["Message"].startswith(
        "The request signature we calculated does not match"
    )


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"key_id": "AKIDUNKNOWN"}, "UnrecognizedClientException"),
        ({"region": "us-west-2"}, "InvalidSignatureException"),
    ],
)
def test_unknown_key_or_wrong_region_is_refused(
    server: FakeBedrockServer, kwargs: dict[str, str], code: str
) -> None:
    with pytest.raises(ClientError) as err:
        make_client(server.url, **kwargs).converse(modelId="m", messages=HI)
    assert err.value.response["Error"]["Code"] == code


def test_signature_covers_the_exact_body_and_path(server: FakeBedrockServer) -> None:
    body = json.dumps({"messages": HI}).encode()
    assert signed_post(server, "/model/m%3A0/converse", body).status_code == 200
    assert server.requests[-1]["model_id"] == "m:0"
    url = server.url + "/model/m/converse"
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(KEY_ID, SECRET), "bedrock", REGION).add_auth(request)
    headers = dict(request.headers.items())
    tampered = httpx.post(url, content=body.replace(b"hi", b"ho"), headers=headers)
    assert tampered.status_code == 403
    assert tampered.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException:")
    # The same path, re-quoted differently than it was signed, no longer matches.
    moved = httpx.post(server.url + "/model/m%3A0/converse", content=body, headers=headers)
    assert moved.status_code == 403


def test_missing_authentication_and_bearer_keys() -> None:
    with FakeBedrockServer(
        api_key="bedrock-key", access_key_id=KEY_ID, secret_access_key=SECRET
    ) as fake:
        url = fake.url + "/model/m/converse"
        body = {"messages": HI}
        missing = httpx.post(url, json=body)
        assert missing.status_code == 403
        assert missing.json() == {"message": "Missing Authentication Token"}
        assert missing.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException")
        bearer = httpx.post(url, json=body, headers={"Authorization": "Bearer bedrock-key"})
        assert bearer.status_code == 200
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403


def test_session_token_is_required_when_configured() -> None:
    with FakeBedrockServer(
        access_key_id=KEY_ID, secret_access_key=SECRET, session_token="tok-1", region=REGION
    ) as fake:
        with pytest.raises(ClientError) as err:
            make_client(fake.url).converse(modelId="m", messages=HI)
        assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"
        good = botocore.session.get_session().create_client(
            "bedrock-runtime",
            region_name=REGION,
            endpoint_url=fake.url,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            aws_session_token="tok-1",
            config=NO_RETRIES,
        )
        assert good.converse(modelId="m", messages=HI)["stopReason"] == "end_turn"
        assert fake.requests[-1]["headers"]["x-amz-security-token"] == "tok-1"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"messages": HI, "temperature": 0.5}, 'Unknown parameter in input: "temperature"'),
        ({"messages": HI, "modelId": "m"}, "modelId"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, "type"),
        ({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}, "tagged union"),
        ({"messages": HI, "inferenceConfig": {"maxTokens": "5"}}, "inferenceConfig.maxTokens"),
        ({"messages": HI, "inferenceConfig": {"maxTokens": 0}}, "valid min value: 1"),
        ({"messages": HI, "system": [{"text": ""}]}, "system[0].text"),
        ({"messages": HI, "system": "be brief"}, "system"),
        ({"messages": []}, "must start with a user message"),
        ({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}, "start with a user"),
        ({"messages": HI + HI}, "must alternate between user and assistant"),
        (
            {"messages": [{"role": "user", "content": [{"text": "  "}]}]},
            "messages.0.content.0 is blank",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"toolResult": {"toolUseId": "t1", "content": []}}],
                    }
                ]
            },
            "toolConfig field must be defined",
        ),
        (
            {
                "messages": [
                    *HI,
                    {
                        "role": "assistant",
                        "content": [{"toolUse": {"toolUseId": "t1", "name": "w", "input": {}}}],
                    },
                    *HI,
                ],
                "toolConfig": {"tools": [WEATHER_TOOL]},
            },
            "Expected toolResult blocks at messages.2.content for the following Ids: t1",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"image": {"format": "png", "source": {"bytes": "!!not b64"}}}],
                    }
                ]
            },
            "Invalid base64 value at messages[0].content[0].image.source.bytes",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"image": {"format": "png", "source": {"bytes": "/9j/4AAQSkZJRg=="}}}
                        ],
                    }
                ]
            },
            "does not match the specified image format",
        ),
        (
            {"messages": HI, "toolConfig": {"tools": [{"toolSpec": {"name": "x"}}]}},
            "inputSchema",
        ),
    ],
)
def test_validation_uses_botocores_model_and_the_service_rules(
    server: FakeBedrockServer, body: dict[str, Any], mentions: str
) -> None:
    response = signed_post(server, "/model/m/converse", json.dumps(body).encode())
    assert response.status_code == 400, response.text
    assert response.headers["x-amzn-ErrorType"].startswith("ValidationException")
    assert mentions in response.json()["message"]


def test_validation_accepts_rich_valid_bodies() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n0000").decode()
    body = {
        "system": [{"text": "be brief"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "weather?"},
                    {"image": {"format": "png", "source": {"bytes": png}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"c": 1}}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "t1",
                            "content": [{"json": {"sky": "blue"}}],
                            "status": "success",
                        }
                    }
                ],
            },
        ],
        "inferenceConfig": {
            "maxTokens": 10,
            "temperature": 1,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        "toolConfig": {"tools": [WEATHER_TOOL], "toolChoice": {"auto": {}}},
    }
    assert validate_converse("Converse", MODEL, body) is None
    assert validate_converse("ConverseStream", MODEL, body) is None


def test_validation_can_be_disabled() -> None:
    with FakeBedrockServer(behavior=BedrockBehavior(validate=False)) as fake:
        body = {"messages": [{"role": "wizard", "content": "x"}], "extra": 1}
        response = httpx.post(fake.url + "/model/m/converse", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["output"]["message"]["content"][0]["text"].startswith("tok0")


def test_bad_json_unknown_path_and_wrong_method() -> None:
    with FakeBedrockServer() as fake:
        bad = httpx.post(fake.url + "/model/m/converse", content=b"{nope")
        assert bad.status_code == 400
        assert bad.headers["x-amzn-ErrorType"].startswith("SerializationException")
        assert httpx.post(fake.url + "/model/m/chat", json={}).status_code == 404
        assert httpx.get(fake.url + "/model/m/converse").status_code == 405


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "ThrottlingException"),
        (503, "ServiceUnavailableException"),
        (500, "InternalServerException"),
        (408, "ModelTimeoutException"),
        (424, "ModelErrorException"),
        (403, "AccessDeniedException"),
    ],
)
def test_fail_status_maps_to_bedrock_error_types(
    server: FakeBedrockServer, client: Any, status: int, code: str
) -> None:
    server.behavior.fail_status = status
    with pytest.raises(ClientError) as err:
        client.converse(modelId="m", messages=HI)
    response = err.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert response["Error"]["Code"] == code and response["Error"]["Message"]
    assert isinstance(err.value, getattr(client.exceptions, code, ClientError))


def test_fail_status_applies_to_streams_before_any_event(
    server: FakeBedrockServer, client: Any
) -> None:
    server.behavior.fail_status = 503
    server.behavior.fail_times = 1
    with pytest.raises(client.exceptions.ServiceUnavailableException):
        client.converse_stream(modelId="m", messages=HI)
    assert server.active_streams == 0 and server.cancelled_streams == 0
    assert list(client.converse_stream(modelId="m", messages=HI)["stream"])  # fail_times spent


@pytest.mark.parametrize("after", [0, 2])
def test_stream_exception_event(server: FakeBedrockServer, client: Any, after: int) -> None:
    server.behavior.stream_exception = "throttlingException"
    server.behavior.stream_exception_after = after
    received = []
    with pytest.raises(EventStreamError) as err:
        for event in client.converse_stream(modelId="m", messages=HI)["stream"]:
            received.append(next(iter(event)))
    assert err.value.response["Error"]["Code"] == "throttlingException"
    assert received == ["messageStart", "contentBlockDelta"][:after]


def test_disconnect_after_chunks_drops_the_stream(server: FakeBedrockServer) -> None:
    server.behavior.disconnect_after_chunks = 2
    body = json.dumps({"messages": HI}).encode()
    raw = b""
    with pytest.raises(httpx.RemoteProtocolError):
        url = server.url + "/model/m/converse-stream"
        request = AWSRequest(
            method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(Credentials(KEY_ID, SECRET), "bedrock", REGION).add_auth(request)
        with httpx.stream("POST", url, content=body, headers=dict(request.headers.items())) as r:
            for chunk in r.iter_raw():
                raw += chunk
    kinds = [headers[":event-type"] for headers, _ in decode(raw)]
    assert kinds == ["messageStart", "contentBlockDelta", "contentBlockDelta"]
    assert server.cancelled_streams == 0  # the server hung up; the client did not go away


def test_hang_is_cancelled_by_the_client_leaving(
    server: FakeBedrockServer, wait_for: Callable[..., bool]
) -> None:
    server.behavior.hang = True
    with pytest.raises(httpx.ReadTimeout):
        signed_post(server, "/model/m/converse", json.dumps({"messages": HI}).encode(), timeout=0.3)
    assert wait_for(lambda: server.cancelled_requests == 1)
    assert wait_for(lambda: server.active_requests == 0)


def test_latency_delays_the_answer(server: FakeBedrockServer, client: Any) -> None:
    server.behavior.latency_ms = 200
    started = time.perf_counter()
    client.converse(modelId="m", messages=HI)
    assert time.perf_counter() - started >= 0.19


# --------------------------------------------------------------------------- embeddings


def test_titan_embeddings_via_invoke_model(server: FakeBedrockServer, client: Any) -> None:
    response = client.invoke_model(
        modelId="amazon.titan-embed-text-v2:0",
        body=json.dumps({"inputText": "hello there world", "dimensions": 256}),
        contentType="application/json",
        accept="application/json",
    )
    answer = json.loads(response["body"].read())
    assert len(answer["embedding"]) == 256
    assert answer["embeddingsByType"]["float"] == answer["embedding"]
    assert answer["inputTextTokenCount"] == len("hello there world") // 4
    assert abs(sum(v * v for v in answer["embedding"]) - 1) < 1e-6
    assert server.requests[-1]["raw_path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    for body in ({"inputText": "x", "dimensions": 100}, {"inputText": "x", "texts": ["y"]}, {}):
        with pytest.raises(client.exceptions.ValidationException):
            client.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps(body))
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(
            modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": "x"})
        )


# --------------------------------------------------------------------------- CLI


def test_cli_serves_until_terminated(run_cli: Callable[..., str]) -> None:
    args = ["--access-key-id", KEY_ID, "--secret-access-key", SECRET, "--region", REGION]
    url = run_cli("fakes.bedrock_server", "Bedrock", *args, "--completion-tokens", "2")
    answer = make_client(url).converse(modelId=MODEL, messages=HI)
    assert answer["usage"]["outputTokens"] == 2


def test_cli_defaults() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args([])
    assert args.port == 9004 and args.region == "us-east-1"
    assert "Bedrock API key" in parser.format_help()
