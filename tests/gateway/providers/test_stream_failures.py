"""The one stream loop: a stream cut by the upstream fails the same way for every provider
kind in the registry (the loop used to be copied per provider, and Anthropic and Bedrock
recorded a cut before the first byte as ``upstream_unreachable``)."""

from __future__ import annotations

import openai
import pytest

from tests.factories import records_wait

MESSAGES = [{"role": "user", "content": "Say hello to the gateway, please."}]


def _client(gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)


def test_a_stream_cut_before_the_first_byte_is_stream_broken_for_every_kind(routed):
    kind, gateway, secret, server = routed
    server.behavior.disconnect_after_chunks = -1  # 200 and headers, then hang up

    with pytest.raises(openai.APIStatusError) as err:
        list(
            _client(gateway, secret).chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
        )

    assert err.value.status_code == 502
    assert err.value.body["code"] == "upstream_stream_broken"
    [record] = records_wait(gateway, 1)
    assert record.status_code == 502 and record.error_code == "upstream_stream_broken"
    assert record.attempts and {a[2] for a in record.attempts} == {"upstream_stream_broken"}
    assert all(a[0].startswith(f"{kind}:") for a in record.attempts)


def test_a_stream_cut_mid_way_ends_with_an_error_event_for_every_kind(routed):
    _kind, gateway, secret, server = routed
    server.behavior.completion_tokens = 10
    server.behavior.disconnect_after_chunks = 3

    stream = _client(gateway, secret).chat.completions.create(
        model="m", messages=MESSAGES, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk)

    assert "broke off" in str(err.value) or "without completing" in str(err.value)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text.startswith("tok0") and not any(
        c.choices and c.choices[0].finish_reason for c in received
    )
    [record] = records_wait(gateway, 1)
    assert record.status_code == 502 and record.error_code == "upstream_stream_broken"
    assert record.usage_estimated and record.output_tokens >= 3
