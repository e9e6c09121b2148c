"""Every refusal: OpenAI-style body, right status, no upstream call, and a record."""

from __future__ import annotations

from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from apps.keys.services import key_revoke, key_rotate
from tests.factories import allow_models, key_create, model_create, provider_create, records_wait

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def env(gateway, fake_upstream):
    provider = provider_create(fake_upstream.url)
    models = {name: model_create(name, provider) for name in ("alpha", "beta", "gamma")}
    issued = key_create()
    gateway.snapshots.reload()
    return {"gateway": gateway, "upstream": fake_upstream, "key": issued, "models": models}


def _client(gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)


def _assert_openai_error(body: dict, code: str) -> None:
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["code"] == code


def _chat(gateway, secret):
    return _client(gateway, secret).chat.completions.create(model="alpha", messages=MESSAGES)


def test_unknown_malformed_and_missing_keys_get_401(env):
    gateway = env["gateway"]
    cases = {
        "sk-odock-thisKeyWasNeverIssued000000000000": "invalid_api_key",
        "not-an-odock-key": "invalid_api_key",
    }
    for secret, code in cases.items():
        with pytest.raises(openai.AuthenticationError) as err:
            _chat(gateway, secret)
        _assert_openai_error(err.value.response.json(), code)
        assert secret not in err.value.response.text  # never echo what was sent

    response = httpx.post(
        gateway.url + "/v1/chat/completions", json={"model": "alpha", "messages": MESSAGES}
    )
    assert response.status_code == 401
    _assert_openai_error(response.json(), "missing_api_key")
    assert env["upstream"].requests == []
    assert [r.status_code for r in records_wait(gateway, 3)] == [401, 401, 401]


def test_revoked_expired_and_inactive_keys_get_401(env):
    gateway, issued = env["gateway"], env["key"]
    expired = key_create(expires_at=timezone.now() - timedelta(seconds=1))
    inactive = key_create()
    team = inactive.key.project.team
    team.is_active = False
    team.save()
    key_revoke(key=issued.key)
    gateway.snapshots.reload()

    for secret, code in [
        (issued.secret, "key_revoked"),
        (expired.secret, "key_expired"),
        (inactive.secret, "key_inactive"),
    ]:
        with pytest.raises(openai.AuthenticationError) as err:
            _chat(gateway, secret)
        _assert_openai_error(err.value.response.json(), code)
    assert env["upstream"].requests == []
    records = records_wait(gateway, 3)
    # Refusals after the key was identified are attributed to it.
    assert [r.key_id for r in records] == [issued.key.pk, expired.key.pk, inactive.key.pk]
    assert [r.decisions[-1][2] for r in records] == [
        "revoked key",
        "expired key",
        "key suspended, or its owner, organisation, team or project inactive",
    ]


def test_rotated_key_old_secret_works_during_grace_only(env):
    gateway, issued = env["gateway"], env["key"]
    rotated = key_rotate(key=issued.key, grace=timedelta(hours=1))
    gateway.snapshots.reload()
    assert _chat(gateway, issued.secret).choices  # old secret, within grace
    assert _chat(gateway, rotated.secret).choices  # new secret

    key = rotated.key
    key.previous_valid_until = timezone.now() - timedelta(seconds=1)
    key.save()
    gateway.snapshots.reload()
    with pytest.raises(openai.AuthenticationError) as err:
        _chat(gateway, issued.secret)
    _assert_openai_error(err.value.response.json(), "key_rotated")
    assert _chat(gateway, rotated.secret).choices


def test_model_access_is_the_intersection_of_levels(env):
    gateway, issued, models = env["gateway"], env["key"], env["models"]
    project = issued.key.project
    allow_models(project.team.organization, models["alpha"], models["beta"])
    allow_models(project.team, models["beta"], models["gamma"])
    gateway.snapshots.reload()
    client = _client(gateway, issued.secret)

    assert client.chat.completions.create(model="beta", messages=MESSAGES).choices
    for refused in ("alpha", "gamma"):
        with pytest.raises(openai.PermissionDeniedError) as err:
            client.chat.completions.create(model=refused, messages=MESSAGES)
        _assert_openai_error(err.value.response.json(), "model_not_allowed")
    assert [m.id for m in client.models.list()] == ["beta"]
    assert [r["json"]["model"] for r in env["upstream"].requests] == ["beta"]


def test_unknown_model_gets_404(env):
    with pytest.raises(openai.NotFoundError) as err:
        _client(env["gateway"], env["key"].secret).chat.completions.create(
            model="no-such-model", messages=MESSAGES
        )
    _assert_openai_error(err.value.response.json(), "model_not_found")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (
            b'{"messages": [{"role": "user", "content": "x"}]}',
            "missing_required_parameter",
            "model",
        ),
        (b'{"model": "alpha"}', "missing_required_parameter", "messages"),
        (b'{"model": "alpha", "messages": "hi"}', "invalid_type", "messages"),
        (
            b'{"model": "alpha", "messages": [{"content": "x"}]}',
            "missing_required_parameter",
            "messages[0].role",
        ),
        (
            b'{"model": "alpha", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "invalid_type",
            "stream",
        ),
    ],
)
def test_malformed_requests_get_400_and_reach_no_provider(env, body, code, param):
    response = httpx.post(
        env["gateway"].url + "/v1/chat/completions",
        content=body,
        headers={
            "Authorization": f"Bearer {env['key'].secret}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400
    _assert_openai_error(response.json(), code)
    assert response.json()["error"]["param"] == param
    assert env["upstream"].requests == []
    assert [r.status_code for r in records_wait(env["gateway"], 1)] == [400]


def test_oversized_body_gets_413(gateway_factory, fake_upstream):
    gateway = gateway_factory(max_body_bytes=2_000)
    model_create("alpha", provider_create(fake_upstream.url))
    issued = key_create()
    gateway.snapshots.reload()
    big = [{"role": "user", "content": "x" * 5_000}]
    with pytest.raises(openai.APIStatusError) as err:
        _client(gateway, issued.secret).chat.completions.create(model="alpha", messages=big)
    assert err.value.status_code == 413
    _assert_openai_error(err.value.response.json(), "request_too_large")
    assert fake_upstream.requests == []
    [record] = records_wait(gateway, 1)
    assert (record.status_code, record.key_id) == (413, issued.key.pk)  # attributed


def test_unknown_endpoint_and_wrong_method(env):
    """Authenticated first (nothing about the API is told to a caller without a key), then
    refused; every one of them recorded and attributed."""
    url = env["gateway"].url
    auth = {"Authorization": f"Bearer {env['key'].secret}"}
    assert httpx.get(url + "/v1/nope").status_code == 401
    assert httpx.get(url + "/v1/nope", headers=auth).status_code == 404
    response = httpx.get(url + "/v1/chat/completions", headers=auth)
    assert response.status_code == 405
    _assert_openai_error(response.json(), "method_not_allowed")
    records = sorted(records_wait(env["gateway"], 3), key=lambda r: r.created_at)
    assert [(r.endpoint, r.status_code) for r in records] == [
        ("unknown", 401),
        ("unknown", 404),
        ("unknown", 405),
    ]
    assert records[1].key_id == env["key"].key.pk
    # A base URL set without /v1: a JSON error saying where the API is, not an HTML page.
    for path in ("/chat/completions", "/responses", "/models"):
        missing = httpx.post(url + path, headers=auth, json={})
        assert missing.status_code == 404, path
        _assert_openai_error(missing.json(), "unknown_endpoint")
        assert f"/v1{path}" in missing.json()["error"]["message"]
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["snapshot"] is True
