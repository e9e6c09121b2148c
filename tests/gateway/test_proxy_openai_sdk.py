"""The proxy end to end: the official openai SDK → gateway (uvicorn, loopback) → fake upstream."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tests.factories import allow_models, key_create, model_create, provider_create, records_wait

MESSAGES = [{"role": "user", "content": "Say hello to the gateway, please."}]


@pytest.fixture
def setup(gateway, fake_upstream):
    provider = provider_create(fake_upstream.url, api_key="sk-upstream-secret")
    model = model_create(
        "gpt-4o-mini",
        provider,
        upstream_model="upstream-mini",
        input_per_mtok="0.15",
        output_per_mtok="0.60",
    )
    model_create("text-embedding-3-small", provider, input_per_mtok="0.02", output_per_mtok="0")
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    return {
        "gateway": gateway,
        "upstream": fake_upstream,
        "client": client,
        "key": issued,
        "model": model,
    }


def test_chat_non_streaming_answers_and_records_cost(setup):
    client, upstream, gateway = setup["client"], setup["upstream"], setup["gateway"]
    upstream.behavior.completion_tokens = 5

    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens == 5
    sent = upstream.requests[-1]
    assert sent["json"]["model"] == "upstream-mini"  # the deployment's upstream name
    # The provider's credential goes upstream, never the caller's virtual key.
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret"
    assert setup["key"].secret not in str(sent)
    [record] = records_wait(gateway, 1)
    assert record.status_code == 200
    assert record.key_id == setup["key"].key.pk
    assert record.deployment.endswith(":upstream-mini")
    assert (record.input_tokens, record.output_tokens) == (reply.usage.prompt_tokens, 5)
    expected = (record.input_tokens * Decimal("0.15") + 5 * Decimal("0.60")) / Decimal(1_000_000)
    assert record.cost_usd == expected
    assert [d[0] for d in record.decisions] == [
        "authenticate",
        "authorize",
        "inspect",
        "reserve_budget",
        "route",
    ]


def test_chat_streaming_with_usage(setup):
    client, upstream = setup["client"], setup["upstream"]
    upstream.behavior.completion_tokens = 7

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 7
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    [record] = records_wait(setup["gateway"], 1)
    assert record.stream and record.status_code == 200
    assert record.output_tokens == 7 and not record.usage_estimated
    assert record.ttft_ms is not None and record.ttft_ms <= record.latency_ms


def test_streaming_without_include_usage_still_records_real_usage(setup):
    client, upstream = setup["client"], setup["upstream"]
    upstream.behavior.completion_tokens = 4

    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )

    assert all(c.usage is None for c in chunks)  # the client did not ask for the usage event
    assert upstream.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    [record] = records_wait(setup["gateway"], 1)
    assert record.output_tokens == 4 and not record.usage_estimated


def test_embeddings(setup):
    result = setup["client"].embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(result.data) == 2 and result.data[0].embedding
    [record] = records_wait(setup["gateway"], 1)
    assert record.endpoint == "embeddings" and record.status_code == 200
    assert record.input_tokens == result.usage.prompt_tokens


def test_models_lists_only_what_the_key_may_use(setup):
    client = setup["client"]
    assert {m.id for m in client.models.list()} == {"gpt-4o-mini", "text-embedding-3-small"}

    allow_models(setup["key"].key, setup["model"])
    setup["gateway"].snapshots.reload()
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]


def test_upstream_errors_are_mapped_and_recorded(gateway_factory, fake_upstream):
    gateway = gateway_factory(upstream_timeout_seconds=0.5, max_attempts=1)
    model_create("m", provider_create(fake_upstream.url))
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)

    fake_upstream.behavior.fail_status = 500
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert err.value.status_code == 502 and err.value.body["code"] == "upstream_error"

    fake_upstream.behavior.fail_status = 429
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert err.value.response.headers["retry-after"] == "1"

    fake_upstream.behavior.fail_status = None
    fake_upstream.behavior.hang = True
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert err.value.status_code == 504 and err.value.body["code"] == "upstream_timeout"

    statuses = [(r.status_code, r.error_code) for r in records_wait(gateway, 3)]
    assert statuses == [
        (502, "upstream_error"),
        (429, "upstream_rate_limited"),
        (504, "upstream_timeout"),
    ]
