"""/v1/responses, pure: the request → chat translation and its refusals, the chat answer →
Response object, and chat chunks → the typed Responses stream events (each validated
by the openai SDK's own types)."""

from __future__ import annotations

from typing import get_args

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from apps.gateway.errors import GatewayError
from apps.gateway.inbound.openai_responses import (
    check_request,
    input_items,
    responses_to_openai,
)
from apps.gateway.inbound.openai_responses_output import (
    ResponseStream,
    chat_to_response,
    response_object,
)

#: The SDK's stream event classes by their ``type``.
EVENTS = {
    cls.model_fields["type"].annotation.__args__[0]: cls
    for cls in get_args(get_args(ResponseStreamEvent)[0])
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


def translate(body: dict) -> dict:
    check_request(body)
    return responses_to_openai(body, input_items(body.get("input")))


def refusal(body: dict) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        translate(body)
    return info.value


# --------------------------------------------------------------------------- requests


def test_string_input_instructions_and_settings():
    body = {
        "model": "m",
        "input": "Hello",
        "instructions": "Be terse.",
        "max_output_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "safety_identifier": "s-1",
        "service_tier": "flex",
        "prompt_cache_key": "conv-1",
        "reasoning": {"effort": "low"},
        "text": {"verbosity": "low", "format": {"type": "text"}},
        "metadata": {"ticket": "42"},
        "store": True,
        "include": ["reasoning.encrypted_content"],
        "truncation": "disabled",
        "stream": True,
        "stream_options": {"include_obfuscation": False},
    }
    assert translate(body) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hello"},
        ],
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "safety_identifier": "s-1",
        "service_tier": "flex",
        "prompt_cache_key": "conv-1",
        "reasoning_effort": "low",
        "verbosity": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_items_roles_parts_calls_and_outputs():
    items = [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "S"}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in this picture, and the weather?"},
                {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "18 C"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "20 C"}],
        },
    ]
    out = translate({"model": "m", "input": items, "tools": [WEATHER], "tool_choice": "auto"})
    call = {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    assert out["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "system", "content": "S"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture, and the weather?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [{"id": "c1", **call}, {"id": "c2", **call}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "c2", "content": "20 C"},
    ]
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["parameters"],
                "description": "Current weather in a city.",
                "strict": False,
            },
        }
    ]
    assert out["tool_choice"] == "auto"


def test_input_items_get_ids_and_parts_once():
    items = input_items(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {
                "type": "function_call",
                "id": "fc_mine",
                "call_id": "c",
                "name": "f",
                "arguments": "",
            },
        ]
    )
    assert items[0]["id"].startswith("msg_") and items[0]["type"] == "message"
    assert items[0]["content"] == [{"type": "input_text", "text": "hi"}]
    assert items[1]["content"] == [{"type": "output_text", "text": "hello", "annotations": []}]
    assert items[2]["id"] == "fc_mine"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True},
            {
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True},
            },
        ),
    ],
)
def test_text_format_becomes_response_format(fmt, expected):
    out = translate({"model": "m", "input": "x", "text": {"format": fmt}})
    assert out["response_format"] == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("required", "required"),
        ("none", "none"),
        (
            {"type": "function", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choices(choice, expected):
    body = {"model": "m", "input": "x", "tools": [WEATHER], "tool_choice": choice}
    body["parallel_tool_calls"] = False
    out = translate(body)
    assert out["tool_choice"] == expected and out["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[1]"),
        ({"tools": [{"type": "custom", "name": "apply_patch"}]}, "tools[0]"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"truncation": "auto"}, "truncation"),
        ({"reasoning": {"effort": "low", "summary": "concise"}}, "reasoning.summary"),
        ({"include": ["file_search_call.results"]}, "include"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"tool_choice": {"type": "web_search_preview"}, "tools": [WEATHER]}, "tool_choice"),
        ({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "https://x.test/i.png"}],
                    }
                ]
            },
            "input[0].output[0]",
        ),
    ],
)
def test_what_chat_cannot_carry_is_refused_by_name(body, param):
    """Named, never dropped (and the request is never half-translated)."""
    error = refusal({"model": "m", "input": "x", **body})
    assert (error.status, error.code, error.param) == (400, "unsupported_parameter", param)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": "m"}, "input", "missing_required_parameter"),
        ({"model": "m", "input": 5}, "input", "invalid_type"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature", "invalid_type"),
        (
            {"model": "m", "input": "x", "max_output_tokens": 0},
            "max_output_tokens",
            "integer_below_minimum_value",
        ),
        (
            {"model": "m", "input": [{"role": "wizard", "content": "x"}]},
            "input[0].role",
            "invalid_value",
        ),
        ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice", "invalid_value"),
    ],
)
def test_invalid_requests_name_the_parameter(body, param, code):
    error = refusal(body)
    assert (error.status, error.param) == (400, param)
    assert error.code == code


def test_item_reference_resolves_in_the_conversation_or_is_404():
    history = [
        {
            "id": "msg_a",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "A"}],
        }
    ]
    body = {"model": "m", "input": [{"type": "item_reference", "id": "msg_a"}]}
    out = responses_to_openai(body, input_items(body["input"]), history)
    assert out["messages"] == [{"role": "user", "content": "A"}, {"role": "user", "content": "A"}]
    with pytest.raises(GatewayError) as info:
        responses_to_openai(body, input_items(body["input"]))
    assert (info.value.status, info.value.code, info.value.param) == (
        404,
        "not_found",
        "input[0].id",
    )


def test_namespace_tools_are_flattened_and_codex_defaults_accepted():
    namespace = {
        "type": "namespace",
        "name": "agents",
        "description": "Sub-agents.",
        "tools": [{"type": "function", "name": "spawn", "description": "Start one."}],
    }
    body = {
        "model": "m",
        "input": "x",
        "tools": [WEATHER, namespace],
        "reasoning": {"summary": "auto"},
        "client_metadata": {"session_id": "s"},
        "include": [],
    }
    out = translate(body)
    assert out["tools"][1] == {
        "type": "function",
        "function": {
            "name": "spawn",
            "parameters": {"type": "object", "properties": {}},
            "description": "[agents: Sub-agents.] Start one.",
        },
    }
    assert "reasoning_effort" not in out and "client_metadata" not in out
    clash = {**namespace, "tools": [{"type": "function", "name": "get_weather"}]}
    assert refusal({**body, "tools": [WEATHER, clash]}).param == "tools"
    custom = {**namespace, "tools": [{"type": "custom", "name": "apply_patch"}]}
    assert refusal({**body, "tools": [custom]}).param == "tools[0].tools[0]"

    completion = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "spawn", "arguments": "{}"},
                        }
                    ],
                },
            }
        ]
    }
    [call] = chat_to_response(completion, shell(), {"spawn": "agents"})["output"]
    assert call["namespace"] == "agents" and call["name"] == "spawn"


# --------------------------------------------------------------------------- answers


def shell(**request) -> dict:
    return response_object(
        {"model": "m", **request},
        response_id="resp_1",
        created_at=1_700_000_000,
        model="public",
        status="in_progress",
        store=True,
    )


def test_chat_completion_becomes_a_valid_response():
    completion = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }
    request = {"tools": [WEATHER], "metadata": {"a": "b"}, "temperature": 0.5}
    response = Response.model_validate(chat_to_response(completion, shell(**request)))
    assert response.status == "completed" and response.model == "public"
    assert response.output_text == "Checking."
    message, call = response.output
    assert message.id.startswith("msg_") and call.id.startswith("fc_")
    assert (call.call_id, call.name, call.arguments) == ("call_1", "f", "{}")
    assert response.usage.input_tokens == 10 and response.usage.output_tokens == 4
    assert response.usage.input_tokens_details.cached_tokens == 3
    assert response.usage.output_tokens_details.reasoning_tokens == 1
    assert response.metadata == {"a": "b"} and response.temperature == 0.5
    assert response.tools[0].name == "get_weather"


def test_a_cut_answer_is_incomplete():
    completion = {
        "choices": [{"finish_reason": "length", "message": {"role": "assistant", "content": "ab"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 16},
    }
    response = Response.model_validate(chat_to_response(completion, shell(max_output_tokens=16)))
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"


def _chunk(delta=None, finish=None, **extra):
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, **extra}


def _events(raw: bytes) -> list:
    out = []
    for block in raw.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n")
            payload = orjson.loads(data.removeprefix(b"data: "))
            event = EVENTS[payload["type"]].model_validate(payload)
            assert name == b"event: " + event.type.encode()
            out.append(event)
    return out


def test_stream_text_then_tool_call_events():
    stream = ResponseStream(shell(tools=[WEATHER]))
    raw = stream.feed(_chunk({"role": "assistant", "content": ""}))
    raw += stream.feed(_chunk({"content": "Let me "})) + stream.feed(_chunk({"content": "see."}))
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    raw += stream.feed(_chunk({"tool_calls": [call]}))
    raw += stream.feed(
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]})
    )
    raw += stream.feed(
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})
    )
    raw += stream.feed(_chunk({}, "tool_calls"))
    raw += stream.feed(
        _chunk(usage={"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14})
    )
    raw += stream.close_items() + stream.final() + stream.final()
    events = _events(raw)
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[6].text == "Let me see."
    assert events[12].arguments == '{"city":"Paris"}'
    final = events[-1].response
    assert final.status == "completed" and final.usage.total_tokens == 14
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output[1].call_id == "call_1"
    assert events[4].model_extra["obfuscation"]  # padded unless include_obfuscation: false


def test_stream_error_and_unfinished_stream_fail_explicitly():
    stream = ResponseStream(shell(), obfuscate=False)
    raw = stream.feed(_chunk({"content": "x"}))
    raw += stream.feed(
        {"error": {"message": "broke", "type": "api_error", "code": "upstream_stream_broken"}}
    )
    raw += stream.close_items() + stream.final()
    events = _events(raw)
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].message == "broke" and events[-1].response.status == "failed"
    assert events[-1].response.error.code == "server_error"
    assert "obfuscation" not in (events[2].model_extra or {})

    unfinished = ResponseStream(shell())
    raw = unfinished.feed(_chunk({"content": "x"})) + unfinished.close_items() + unfinished.final()
    assert _events(raw)[-1].type == "response.failed"
