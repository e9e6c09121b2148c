"""The Azure OpenAI adapter: URL and header building, then openai SDK → gateway → Azure fake.

The fake (``FakeAzureOpenAIServer``) insists on Azure's URLs, ``api-version`` and
``api-key`` header and validates bodies like the OpenAI fake, so a wrong target fails there.
"""

from __future__ import annotations

import time

import openai
import orjson
import pytest
from yarl import URL

from apps.gateway.providers.azure.adapter import (
    DEFAULT_API_VERSION,
    AzureOpenAIAdapter,
    api_version_of,
    azure_url,
)
from apps.gateway.providers.azure.translate import AzureStreamTranslator
from apps.gateway.providers.errors import error_from_upstream as _error_from_upstream
from apps.gateway.providers.openai.translate import read_usage as _read_usage
from apps.gateway.providers.pool import UpstreamPool
from apps.gateway.snapshot import DeploymentEntry
from apps.providers.models import Deployment, DeploymentRole
from fakes.azure_server import FakeAzureOpenAIServer
from tests.factories import key_create, model_create, provider_create, records_wait
from tests.gateway.contexts import bare_context

AZURE_KEY = "az-upstream-secret"
MESSAGES = [{"role": "user", "content": "Say hello to the gateway, please."}]


def dep(options: tuple[tuple[str, str], ...] = (), **fields) -> DeploymentEntry:
    values = {
        "id": 1,
        "provider": "az",
        "kind": "azure",
        "api_base": "https://res.openai.azure.com",
        "api_key": AZURE_KEY,
        "upstream_model": "gpt-4o-prod",
        "options": options,
        **fields,
    }
    return DeploymentEntry(**values)


# --------------------------------------------------------------------------- pure


def test_deployment_style_url_and_api_version() -> None:
    url = azure_url(
        "https://res.openai.azure.com/", "gpt-4o-prod", "/chat/completions", "2024-10-21"
    )
    assert str(url) == (
        "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions"
        "?api-version=2024-10-21"
    )
    # A pasted ".../openai" endpoint is tolerated; a deployment name stays one segment.
    url = azure_url("http://h:8/openai", "a/b c", "/embeddings", "2025-01-01-preview")
    assert url.raw_path == "/openai/deployments/a%2Fb%20c/embeddings"
    assert url.query["api-version"] == "2025-01-01-preview"


def test_v1_surface_url_has_no_api_version() -> None:
    for base in ("https://res.openai.azure.com", "https://res.openai.azure.com/openai/v1/"):
        url = azure_url(base, "gpt-4o-prod", "/chat/completions", "v1")
        assert url == URL("https://res.openai.azure.com/openai/v1/chat/completions")


def test_api_version_option_and_its_default() -> None:
    assert DEFAULT_API_VERSION == "2024-10-21"
    assert api_version_of(dep()) == DEFAULT_API_VERSION
    assert api_version_of(dep((("api_version", " "),))) == DEFAULT_API_VERSION
    assert api_version_of(dep((("region", "x"), ("api_version", "v1")))) == "v1"


def test_target_is_built_once_with_the_api_key_header() -> None:
    adapter = AzureOpenAIAdapter(UpstreamPool(timeout_seconds=5))
    deployment = dep((("api_version", "2024-06-01"),))
    url, headers = adapter._target(deployment, "/chat/completions")
    assert url.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert url.query["api-version"] == "2024-06-01"
    assert headers == {"Content-Type": "application/json", "api-key": AZURE_KEY}
    assert adapter._target(deployment, "/chat/completions")[1] is headers  # cached
    other, _ = adapter._target(dep(upstream_model="other"), "/chat/completions")
    assert other.path == "/openai/deployments/other/chat/completions"


def test_error_mapping() -> None:
    filtered = b'{"error": {"code": "content_filter", "param": "prompt", "message": "Filtered."}}'
    error = _error_from_upstream(400, filtered, {})
    assert (error.status, error.code, error.param, error.message) == (
        400,
        "content_filter",
        "prompt",
        "Filtered.",
    )
    invalid = _error_from_upstream(400, b'{"error": {"code": "invalid_value"}}', {})
    assert invalid.code == "upstream_rejected"
    assert _error_from_upstream(400, b"not json", {}).code == "upstream_rejected"
    assert _error_from_upstream(500, filtered, {}).code == "upstream_error"
    assert _error_from_upstream(400, b'{"error": {"message": "bad"}}', {}).code == (
        "upstream_rejected"
    )
    auth = _error_from_upstream(401, b'{"error": {"code": "401", "message": "no"}}', {})
    assert (auth.status, auth.code) == (502, "upstream_auth_failed")


def test_read_usage_takes_cached_tokens() -> None:
    ctx = bare_context(request_id="r", started=time.perf_counter(), started_wall=time.time())
    usage = {"prompt_tokens": 50, "completion_tokens": 5}
    assert _read_usage(ctx, {**usage, "prompt_tokens_details": {"cached_tokens": 32}})
    assert (ctx.input_tokens, ctx.output_tokens, ctx.cached_tokens) == (50, 5, 32)
    assert _read_usage(ctx, usage) and ctx.cached_tokens == 0
    assert _read_usage(ctx, {**usage, "prompt_tokens_details": None}) and ctx.cached_tokens == 0
    assert not _read_usage(ctx, None)


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def azure_upstream():
    server = FakeAzureOpenAIServer(
        api_key=AZURE_KEY,
        deployments=["gpt-4o-prod", "embed-prod"],
        content_filter_word="forbidden",
    )
    server.start()
    yield server
    server.stop()


def azure_models(upstream, *, name: str, api_key: str = AZURE_KEY, suffix: str = "", **options):
    """An Azure provider with a chat and an embeddings model (``gpt-4o{suffix}``,
    ``embed{suffix}``) on the fake's deployments ``gpt-4o-prod`` and ``embed-prod``."""
    provider = provider_create(upstream.url, name=name, api_key=api_key, kind="azure")
    if options:
        provider.options = options
        provider.save()
    model_create(
        f"gpt-4o{suffix}",
        provider,
        upstream_model="gpt-4o-prod",
        input_per_mtok="2.5",
        output_per_mtok="10",
    )
    model_create(
        f"embed{suffix}",
        provider,
        upstream_model="embed-prod",
        input_per_mtok="0.02",
        output_per_mtok="0",
    )


def client_for(gateway) -> openai.OpenAI:
    issued = key_create()
    gateway.snapshots.reload()
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)


def azure_setup(gateway, upstream, *, api_key: str = AZURE_KEY) -> openai.OpenAI:
    azure_models(upstream, name="azure-east", api_key=api_key)
    return client_for(gateway)


def test_api_version_option_and_v1_surface_reach_the_url(gateway, azure_upstream) -> None:
    azure_models(azure_upstream, name="azure-dated", api_version="2025-01-01-preview")
    azure_models(azure_upstream, name="azure-v1", suffix="-v1", api_version="v1")
    client = client_for(gateway)

    for suffix in ("", "-v1"):
        reply = client.chat.completions.create(model=f"gpt-4o{suffix}", messages=MESSAGES)
        chunks = list(
            client.chat.completions.create(
                model=f"gpt-4o{suffix}",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        embedded = client.embeddings.create(
            model=f"embed{suffix}", input="hello", encoding_format="float"
        )
        assert reply.choices[0].message.content
        assert reply.model == f"gpt-4o{suffix}"  # the public name, not the deployment's
        assert chunks[-1].usage.completion_tokens == 8
        assert len(embedded.data[0].embedding) == 8 and embedded.model == f"embed{suffix}"

    sent = [(r["path"], r["query"], r["json"]["model"]) for r in azure_upstream.requests]
    version = {"api-version": "2025-01-01-preview"}
    assert sent == [
        ("/openai/deployments/gpt-4o-prod/chat/completions", version, "gpt-4o-prod"),
        ("/openai/deployments/gpt-4o-prod/chat/completions", version, "gpt-4o-prod"),
        ("/openai/deployments/embed-prod/embeddings", version, "embed-prod"),
        ("/openai/v1/chat/completions", {}, "gpt-4o-prod"),
        ("/openai/v1/chat/completions", {}, "gpt-4o-prod"),
        ("/openai/v1/embeddings", {}, "embed-prod"),
    ]
    for request in azure_upstream.requests:
        assert request["headers"]["api-key"] == AZURE_KEY
        assert "authorization" not in request["headers"]
    records = records_wait(gateway, 6)
    assert [(r.status_code, r.output_tokens, r.usage_estimated) for r in records] == [
        (200, 8, False),
        (200, 8, False),
        (200, 0, False),
    ] * 2
    assert [r.deployment.split(":")[0] for r in records] == ["azure-dated"] * 3 + ["azure-v1"] * 3


def test_prompt_content_filter_is_a_client_400(gateway, azure_upstream) -> None:
    client = azure_setup(gateway, azure_upstream)
    messages = [{"role": "user", "content": "Tell me something forbidden."}]

    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            if stream:
                list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
            else:
                client.chat.completions.create(model="gpt-4o", messages=messages)
        assert err.value.status_code == 400
        assert err.value.body["code"] == "content_filter" and err.value.body["param"] == "prompt"
        assert "content management policy" in err.value.body["message"]

    assert len(azure_upstream.requests) == 2  # a policy refusal is neither retried nor failed over
    records = records_wait(gateway, 2)
    assert [(r.status_code, r.error_code) for r in records] == [(400, "content_filter")] * 2


def test_prompt_filter_results_and_content_filter_finish_pass_through(
    gateway, azure_upstream
) -> None:
    """Azure's leading prompt-filter event is not a chunk: its results ride on the first
    real chunk, so every chunk the client gets is a ``chat.completion.chunk``."""
    client = azure_setup(gateway, azure_upstream)
    azure_upstream.behavior.completion_tokens = 6

    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    leading = chunks[0]
    assert leading.choices[0].delta.role == "assistant" and leading.id
    assert (leading.model_extra or {})["prompt_filter_results"][0]["prompt_index"] == 0
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert not any("prompt_filter_results" in (c.model_extra or {}) for c in chunks[1:])
    assert all(c.usage is None for c in chunks)  # the usage chunk the client did not ask for
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 6

    azure_upstream.completion_filter_word = "hello"
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].finish_reason == "content_filter"
    assert (reply.choices[0].model_extra or {})["content_filter_results"]["violence"]["filtered"]
    assert (reply.model_extra or {})["prompt_filter_results"]
    streamed = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "content_filter"

    records = records_wait(gateway, 3)
    assert [(r.status_code, r.output_tokens, r.usage_estimated) for r in records] == [
        (200, 6, False),
        (200, 3, False),
        (200, 3, False),
    ]
    assert records[0].input_tokens > 0 and records[0].cost_usd > 0


def test_auth_failure_is_502_without_the_key(gateway_factory, azure_upstream) -> None:
    gateway = gateway_factory(max_attempts=1)
    wrong_key = "az-wrong-key-4711"
    client = azure_setup(gateway, azure_upstream, api_key=wrong_key)

    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert err.value.status_code == 502 and err.value.body["code"] == "upstream_auth_failed"
    assert azure_upstream.requests[-1]["headers"]["api-key"] == wrong_key
    assert wrong_key not in err.value.response.text
    assert AZURE_KEY not in err.value.response.text
    [record] = records_wait(gateway, 1)
    assert (record.status_code, record.error_code) == (502, "upstream_auth_failed")


def test_failing_azure_deployment_fails_over_to_openai(
    gateway, azure_upstream, fake_upstream
) -> None:
    model = model_create(
        "gpt-4o",
        provider_create(azure_upstream.url, name="azure-east", api_key=AZURE_KEY, kind="azure"),
        upstream_model="gpt-4o-prod",
    )
    Deployment.objects.create(
        model=model,
        provider=provider_create(fake_upstream.url, name="openai-backup"),
        upstream_model="gpt-4o-backup",
        role=DeploymentRole.FALLBACK,
    )
    issued = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    azure_upstream.behavior.fail_status = 503

    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))

    assert reply.choices[0].message.content
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(azure_upstream.requests) == 2
    assert [r["json"]["model"] for r in fake_upstream.requests] == ["gpt-4o-backup"] * 2
    records = records_wait(gateway, 2)
    for record in records:
        assert record.status_code == 200 and record.deployment == "openai-backup:gpt-4o-backup"
        assert [a[0] for a in record.attempts] == [
            "azure-east:gpt-4o-prod",
            "openai-backup:gpt-4o-backup",
        ]
        assert record.attempts[0][1:3] == [502, "upstream_error"]


FILTER_EVENT = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"",'
    b'"prompt_filter_results":[{"prompt_index":0}]}'
)
ROLE_CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
)


def _events(out: bytes) -> list[dict]:
    return [orjson.loads(e[len(b"data: ") :]) for e in out.split(b"\n\n") if e]


def test_the_prompt_filter_event_is_folded_into_the_first_chunk() -> None:
    translator = AzureStreamTranslator(include_usage=False, public_model="m")
    assert translator.feed_event(FILTER_EVENT) == b""
    [first] = _events(translator.feed_event(ROLE_CHUNK))
    assert first["object"] == "chat.completion.chunk" and first["model"] == "m"
    assert first["prompt_filter_results"] == [{"prompt_index": 0}]
    [second] = _events(translator.feed_event(ROLE_CHUNK))
    assert "prompt_filter_results" not in second and second["model"] == "m"
    assert translator.chunks == 2  # the held event is not counted as content


def test_without_a_filter_event_the_stream_passes_through() -> None:
    translator = AzureStreamTranslator(include_usage=False, public_model="m")
    [first] = _events(translator.feed_event(ROLE_CHUNK))
    assert "prompt_filter_results" not in first
    # A later event shaped like the filter event is not the leading one: passed on.
    assert translator.feed_event(FILTER_EVENT) != b""
    assert translator.feed_event(b"data: [DONE]") == b"data: [DONE]\n\n"
