"""The validators themselves: a contract test that cannot fail proves nothing, so each
check here feeds a deliberately broken shape and expects it refused."""

from __future__ import annotations

import copy

import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent

from tests.contract.shapes import anthropic_errors, assert_anthropic, assert_openai, openai_spec

CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


def _broken(base: dict, change) -> dict:
    data = copy.deepcopy(base)
    change(data)
    return data


def test_a_real_chunk_passes_nulls_included():
    """``finish_reason: null`` is valid only once ``nullable: true`` is rewritten."""
    assert_openai("CreateChatCompletionStreamResponse", CHUNK)
    assert_openai(
        "ErrorResponse", {"error": {"message": "x", "type": "t", "code": None, "param": None}}
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.pop("object"),
        lambda c: c.update(object="chat.completion"),
        lambda c: c.update(created="now"),
        lambda c: c["choices"][0].pop("finish_reason"),
        lambda c: c["choices"][0].update(finish_reason="done"),
        lambda c: c["choices"][0]["delta"].update(role="robot"),
        lambda c: c.update(modle="m"),  # a typo'd top-level field
        lambda c: c["choices"][0]["delta"].update(contnet="x"),  # a typo'd nested one
        lambda c: c["choices"][0]["delta"].update(
            tool_calls=[{"index": 0, "function": {"name": "f", "argumnts": "{}"}}]
        ),
    ],
)
def test_a_broken_chunk_is_refused(change):
    problems = openai_spec().errors("CreateChatCompletionStreamResponse", _broken(CHUNK, change))
    assert problems


@pytest.mark.parametrize(
    "error",
    [
        {"message": "x", "type": "t", "code": None},  # param missing
        {"message": "x", "type": "t", "code": 5, "param": None},
        {"message": "x", "type": "t", "code": None, "param": None, "secret": "x"},
    ],
)
def test_a_broken_error_body_is_refused(error):
    assert openai_spec().errors("ErrorResponse", {"error": error})


def test_a_real_message_passes_and_broken_ones_are_refused():
    assert_anthropic(Message, MESSAGE, published="Message")
    for change in (
        lambda m: m.update(stop_reasn="end_turn"),  # typo'd top-level field
        lambda m: m["usage"].update(input_tokens="3"),  # no coercion
        lambda m: m["content"][0].update(txt="hi"),  # typo'd field in a block
        lambda m: m.update(type="msg"),
        lambda m: m.pop("usage"),
    ):
        assert anthropic_errors(Message, _broken(MESSAGE, change))


def test_stream_events_and_errors_are_checked_by_their_union():
    start = {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None}}
    assert_anthropic(RawMessageStreamEvent, start, published="MessageStreamEvent")
    assert anthropic_errors(RawMessageStreamEvent, {"type": "message_begin"})
    assert anthropic_errors(
        RawMessageStreamEvent, {"type": "content_block_delta", "index": 0, "delta": {"text": "x"}}
    )
    error = {"type": "error", "error": {"type": "api_error", "message": "down"}}
    assert_anthropic(ErrorResponse, error, published="ErrorResponse")
    assert anthropic_errors(
        ErrorResponse, {"type": "error", "error": {"type": "oops", "message": ""}}
    )


def test_the_spec_gaps_filled_are_only_those_named():
    """NULLABLE_IN_PRACTICE / ADDED_PROPERTIES relax exactly what they list."""
    spec = openai_spec()
    delta = {
        "type": "response.output_text.delta",
        "sequence_number": 3,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
        "logprobs": [],
    }
    assert not spec.errors("ResponseStreamEvent", {**delta, "obfuscation": "xyz"})
    assert spec.errors("ResponseStreamEvent", {**delta, "obfuscate": "xyz"})
    assert spec.errors("ResponseStreamEvent", {**delta, "obfuscation": 5})
    assert not spec.errors(
        "CreateChatCompletionStreamResponse", {**CHUNK, "system_fingerprint": None}
    )
    assert spec.errors("CreateChatCompletionStreamResponse", {**CHUNK, "system_fingerprint": 5})


def test_a_union_failure_names_the_field_of_the_branch_its_type_chose():
    event = {
        "type": "response.function_call_arguments.done",
        "sequence_number": 8,
        "item_id": "fc_1",
        "output_index": 0,
        "arguments": "{}",
    }
    assert openai_spec().errors("ResponseStreamEvent", event) == [
        "$: 'name' is a required property"
    ]
    assert not openai_spec().errors("ResponseStreamEvent", {**event, "name": "f"})
