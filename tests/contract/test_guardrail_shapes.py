"""Answers an output guardrail changed or cut keep their door's shape: a redacted stream
is still valid chunks / Messages events, a stream cut mid-way ends with a valid error
event, a blocked whole answer is a valid error body. Both doors, the ``guarded`` key of
the ``refusals`` fixture (secrets blocked, e-mail addresses redacted in answers)."""

from __future__ import annotations

import anthropic
import openai
import pytest
from anthropic.types import Message

from tests.contract.shapes import assert_anthropic, assert_anthropic_error, assert_openai
from tests.contract.test_anthropic_answers import assert_stream_event
from tests.contract.test_errors import AWS_KEY
from tests.contract.wire import DONE, sse_events

EMAIL = "jane.doe@example.com"
REDACTED = "Write to [EMAIL_1] or to [EMAIL_1]."
# Longer than the guard's hold-back, so text flows before the key is seen.
CUT = "Sure. " + "Here is some context first. " * 8 + f"The key is {AWS_KEY} and that is all."
HI = [{"role": "user", "content": "hi"}]


def _openai(refusals) -> openai.OpenAI:
    url = refusals["gateway"].url + "/v1"
    return openai.OpenAI(base_url=url, api_key=refusals["guarded"], max_retries=0)


def _anthropic(refusals) -> anthropic.Anthropic:
    url = refusals["gateway"].url
    return anthropic.Anthropic(base_url=url, api_key=refusals["guarded"], max_retries=0)


def _chunks(refusals) -> list:
    with _openai(refusals).chat.completions.with_streaming_response.create(
        model="alpha", messages=HI, stream=True
    ) as response:
        return [data for _name, data in sse_events(response.iter_lines())]


def _events(refusals) -> list:
    with _anthropic(refusals).messages.with_streaming_response.create(
        model="alpha", max_tokens=64, messages=HI, stream=True
    ) as response:
        return sse_events(response.iter_lines())


def test_redacted_answers_keep_their_shape(refusals):
    refusals["upstream"].behavior.reply = f"Write to {EMAIL} or to {EMAIL}."

    answer = _openai(refusals).chat.completions.with_raw_response.create(model="alpha", messages=HI)
    assert_openai("CreateChatCompletionResponse", answer.http_response.json())
    assert answer.http_response.json()["choices"][0]["message"]["content"] == REDACTED

    chunks = _chunks(refusals)
    assert chunks[-1] == DONE
    for chunk in chunks[:-1]:
        assert_openai("CreateChatCompletionStreamResponse", chunk)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"]
    )
    assert text == REDACTED

    message = _anthropic(refusals).messages.with_raw_response.create(
        model="alpha", max_tokens=64, messages=HI
    )
    assert_anthropic(Message, message.http_response.json(), published="Message")
    events = _events(refusals)
    for name, data in events:
        assert_stream_event(name, data)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == REDACTED and events[-1][0] == "message_stop"


def test_answers_an_output_guardrail_cuts_end_with_a_valid_error(refusals):
    refusals["upstream"].behavior.reply = CUT

    with pytest.raises(openai.BadRequestError) as info:
        _openai(refusals).chat.completions.create(model="alpha", messages=HI)
    assert_openai("ErrorResponse", info.value.response.json())
    with pytest.raises(anthropic.BadRequestError) as refused:
        _anthropic(refusals).messages.create(model="alpha", max_tokens=64, messages=HI)
    assert_anthropic_error(refused.value.response.json())

    *chunks, last = _chunks(refusals)
    assert chunks, "text before the secret flows"
    for chunk in chunks:
        assert_openai("CreateChatCompletionStreamResponse", chunk)
    assert_openai("ErrorResponse", last)
    assert last["error"]["code"] == "guardrail_blocked"

    events = _events(refusals)
    for name, data in events:
        assert_stream_event(name, data)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
