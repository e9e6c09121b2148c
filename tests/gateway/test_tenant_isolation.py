"""One tenant's bad requests never take a model away from another tenant (issue 12, item 1).

Two real gateway processes share Redis (where circuit breakers are shared); the fake
upstream checks what it receives against the openai SDK's types, as OpenAI would.
"""

from __future__ import annotations

import json
import time

import httpx
import openai

from apps.audit.models import RequestLog
from tests.factories import key_create, model_create, provider_create

GOOD = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
EMBED = {"model": "alpha", "input": "hi"}

# What reached the provider (and was billed) before requests were checked against the
# API's schema: each must now be refused by the gateway itself.
MALFORMED_CHAT = [
    {**GOOD, "max_tokens": "8"},
    {**GOOD, "max_tokens": True},
    {**GOOD, "max_tokens": 1e308},
    {**GOOD, "max_tokens": 10**30},
    {**GOOD, "max_tokens": -5},
    {**GOOD, "max_tokens": 0},
    {**GOOD, "max_completion_tokens": 0},
    {**GOOD, "temperature": "hot"},
    {**GOOD, "temperature": 3},
    {**GOOD, "top_p": -1},
    {**GOOD, "n": 0},
    {**GOOD, "messages": [{"role": "wizard", "content": "hi"}]},
    {**GOOD, "messages": [{"role": "user", "content": 5}]},
    {**GOOD, "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
    {**GOOD, "model": 5},
    {**GOOD, "stream": "yes"},
    {**GOOD, "tools": [{"type": "function", "function": {"description": "no name"}}]},
]
MALFORMED_EMBEDDINGS = [
    {**EMBED, "dimensions": -1},
    {**EMBED, "dimensions": 10**9},
    {**EMBED, "encoding_format": "xml"},
]
# Valid by the schema, refused by the provider: an unknown top-level parameter (OpenAI
# refuses those; the gateway passes unknown fields through) and a tool call left without
# its result (a rule of the API no schema can say).
UPSTREAM_REJECTED = [{**GOOD, "x_unknown_option": i} for i in range(5)] + [
    {
        **GOOD,
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "user", "content": "well?"},
        ],
    }
    for i in range(5)
]


def _post(url: str, path: str, secret: str, body: dict) -> httpx.Response:
    # json.dumps: orjson (httpx's json=) cannot write 10**30.
    return httpx.post(
        url + path,
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        timeout=30,
    )


def test_one_tenants_bad_requests_never_rest_a_shared_deployment(
    transactional_db, fake_upstream, gateway_processes, redis_url
):
    model_create("alpha", provider_create(fake_upstream.url))
    tenant_a = key_create()
    tenant_b = key_create()
    assert tenant_a.key.project.team.organization != tenant_b.key.project.team.organization
    process_a, process_b = gateway_processes(2, redis_url=redis_url)

    malformed = [("/v1/chat/completions", b) for b in MALFORMED_CHAT] + [
        ("/v1/embeddings", b) for b in MALFORMED_EMBEDDINGS
    ]
    assert len(malformed) == 20
    for path, body in malformed:
        response = _post(process_a.url, path, tenant_a.secret, body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"], error
    assert fake_upstream.requests == []  # none of them reached the provider

    for body in UPSTREAM_REJECTED:
        response = _post(process_a.url, "/v1/chat/completions", tenant_a.secret, body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "upstream_rejected"
    assert len(fake_upstream.requests) == len(UPSTREAM_REJECTED)

    time.sleep(1.5)  # long enough for process B to learn of a circuit opened in Redis
    client = openai.OpenAI(base_url=process_b.url + "/v1", api_key=tenant_b.secret, max_retries=0)
    answer = client.chat.completions.create(**GOOD)
    assert answer.choices[0].message.content

    deadline = time.monotonic() + 10
    while RequestLog.objects.count() < 31 and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = RequestLog.objects.filter(status_code=400)
    assert refused.count() == 30
    assert set(refused.values_list("organization_id", flat=True)) == {
        tenant_a.key.project.team.organization_id
    }
    # The provider's refusals are the client's errors, attempt by attempt.
    rejected = refused.filter(error_code="upstream_rejected")
    assert rejected.count() == 10
    assert all(r.attempts and r.attempts[0][1] == 400 for r in rejected)
