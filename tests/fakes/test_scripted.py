"""The scripted fakes (fakes/scripted.py): a prompt marker makes them call a named tool with
given arguments, in each wire format, validated against the official SDKs' own types;
everything else is the plain fake's answer; ``--record-to`` writes what arrived.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from fakes.scripted import ScriptedAnthropicServer, ScriptedOpenAIServer, scripted_call

KEY = "sk-fake-scripted"
ARGS = {"cmd": "echo hi", "n": 2}
PROMPT = f"Run it. [odock-fake-call exec_command {json.dumps(ARGS)}]"
FUNCTION = {
    "type": "function",
    "name": "exec_command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    "strict": False,
}
OTHER = FUNCTION | {"name": "other"}
CHAT_TOOL = {"type": "function", "function": {k: FUNCTION[k] for k in ("name", "parameters")}}
ANTHROPIC_TOOL = {"name": "exec_command", "input_schema": FUNCTION["parameters"]}
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
ANTHROPIC_EVENT = TypeAdapter(RawMessageStreamEvent)


@pytest.fixture
def openai_fake() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def anthropic_fake() -> Iterator[ScriptedAnthropicServer]:
    with ScriptedAnthropicServer(api_key=KEY) as fake:
        yield fake


def sse_data(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_responses_stream_calls_the_named_tool(openai_fake: ScriptedOpenAIServer) -> None:
    body = {
        "model": "m",
        "store": False,
        "stream": True,
        "tools": [OTHER, FUNCTION],
        "input": [{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
    }
    answer = httpx.post(
        f"{openai_fake.url}/responses", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = [STREAM_EVENT.validate_python(e) for e in sse_data(answer.text)]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    call = events[-1].response.output[0]
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call",
        "exec_command",
        ARGS,
    )
    assert openai_fake.requests[-1]["json"] == body


def test_responses_non_stream_through_the_sdk(openai_fake: ScriptedOpenAIServer) -> None:
    client = openai.OpenAI(base_url=openai_fake.url, api_key=KEY, max_retries=0)
    user: Any = [{"role": "user", "content": PROMPT}]
    raw = client.responses.with_raw_response.create(
        model="m", input=user, tools=[FUNCTION], store=False
    )
    response = Response.model_validate(json.loads(raw.http_response.text))
    assert response.output[0].type == "function_call"
    assert json.loads(response.output[0].arguments) == ARGS


def test_chat_scripted_then_the_plain_fake_answers_the_tool_result(
    openai_fake: ScriptedOpenAIServer,
) -> None:
    client = openai.OpenAI(base_url=openai_fake.url, api_key=KEY, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    first = client.chat.completions.create(model="m", messages=messages, tools=[CHAT_TOOL])
    call = first.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("exec_command", ARGS)
    assert first.choices[0].finish_reason == "tool_calls"
    stream = client.chat.completions.create(
        model="m", messages=messages, tools=[CHAT_TOOL], stream=True
    )
    deltas = [c.choices[0].delta for c in stream if c.choices]
    assert deltas[0].tool_calls[0].function.name == "exec_command"
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "hi"},
    ]
    second = client.chat.completions.create(model="m", messages=messages, tools=[CHAT_TOOL])
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_anthropic_stream_calls_the_named_tool(anthropic_fake: ScriptedAnthropicServer) -> None:
    client = anthropic.Anthropic(base_url=anthropic_fake.url, api_key=KEY, max_retries=0)
    kwargs: Any = {
        "model": "m",
        "max_tokens": 100,
        "tools": [ANTHROPIC_TOOL],
        "messages": [{"role": "user", "content": PROMPT}],
    }
    raw = client.messages.with_raw_response.create(**kwargs, stream=True)
    for event in sse_data(raw.http_response.read().decode()):
        ANTHROPIC_EVENT.validate_python(event)
    with client.messages.stream(**kwargs) as stream:
        message = stream.get_final_message()
    block = message.content[0]
    assert (block.type, block.name, block.input) == ("tool_use", "exec_command", ARGS)
    assert message.stop_reason == "tool_use"
    plain = client.messages.with_raw_response.create(**kwargs)
    whole = Message.model_validate(json.loads(plain.http_response.text))
    assert whole.content[0].type == "tool_use"


def test_anthropic_after_the_tool_result_is_the_plain_fake(
    anthropic_fake: ScriptedAnthropicServer,
) -> None:
    client = anthropic.Anthropic(base_url=anthropic_fake.url, api_key=KEY, max_retries=0)
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "hi"}
    message = client.messages.create(
        model="m",
        max_tokens=100,
        tools=[ANTHROPIC_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": PROMPT},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": ARGS}
                ],
            },
            {"role": "user", "content": [result]},  # type: ignore[list-item]
        ],
    )
    assert message.content[0].type == "text"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"tools": [OTHER], "input": PROMPT}),  # input not a list
        ("/v1/responses", {"tools": [OTHER], "input": [{"role": "user", "content": PROMPT}]}),
        (
            "/v1/responses",
            {
                "tools": [FUNCTION],
                "input": [
                    {"role": "user", "content": PROMPT},
                    {"type": "function_call_output", "call_id": "c", "output": "x"},
                ],
            },
        ),
        ("/v1/chat/completions", {"tools": [CHAT_TOOL], "messages": [{"role": "user"}]}),
        (
            "/v1/messages",
            {"tools": [ANTHROPIC_TOOL], "messages": [{"role": "user", "content": "hi"}]},
        ),
        (
            "/v1/messages",
            {
                "tools": [ANTHROPIC_TOOL],
                "messages": [{"role": "user", "content": PROMPT.replace("{", "[")}],
            },
        ),
    ],
)
def test_no_script_without_a_marker_an_offered_tool_or_before_a_result(
    path: str, body: dict[str, Any]
) -> None:
    assert scripted_call(path, body) is None


def test_claude_codes_trailing_system_message_still_scripts() -> None:
    body = {
        "tools": [ANTHROPIC_TOOL],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
            {"role": "system", "content": "environment"},
        ],
    }
    assert scripted_call("/v1/messages", body) == ("exec_command", ARGS)


def test_cli_records_to_a_file(run_cli: Callable[..., str], tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    url = run_cli("fakes.scripted", "Anthropic", "anthropic", "--record-to", str(record))
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": "any", "anthropic-version": "2023-06-01", "X-Secret-Test": "1"}
    assert httpx.post(f"{url}/v1/messages", json=body, headers=headers).status_code == 200
    line = json.loads(record.read_text().splitlines()[-1])
    assert line["path"] == "/v1/messages" and line["json"] == body
    assert line["headers"]["x-secret-test"] == "1"
    assert line["headers"]["x-api-key"] == "<redacted>"


def test_an_invalid_request_gets_the_plain_fakes_400(
    openai_fake: ScriptedOpenAIServer, anthropic_fake: ScriptedAnthropicServer
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    chat = {"model": "m", "tools": [CHAT_TOOL], "messages": [{"role": "user", "content": PROMPT}]}
    bad_chat = chat | {"temperature": "hot"}
    assert httpx.post(f"{openai_fake.url}/chat/completions", json=chat, headers=headers).is_success
    answer = httpx.post(f"{openai_fake.url}/chat/completions", json=bad_chat, headers=headers)
    assert answer.status_code == 400
    messages = {
        "model": "m",
        "tools": [ANTHROPIC_TOOL],
        "messages": [{"role": "user", "content": PROMPT}],
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    answer = httpx.post(f"{anthropic_fake.url}/v1/messages", json=messages, headers=headers)
    assert answer.status_code == 400  # max_tokens is required
    messages["max_tokens"] = 10
    answer = httpx.post(f"{anthropic_fake.url}/v1/messages", json=messages, headers=headers)
    assert answer.json()["content"][0]["type"] == "tool_use"
    responses = {"model": "m", "tools": [FUNCTION], "input": [{"role": "user", "content": PROMPT}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    answer = httpx.post(f"{openai_fake.url}/responses", json=responses, headers=headers)
    assert answer.status_code == 400  # the fake stores nothing: store false is required
    responses["store"] = False
    answer = httpx.post(f"{openai_fake.url}/responses", json=responses, headers=headers)
    assert answer.json()["output"][0]["type"] == "function_call"
