"""``GET /v1/models`` and ``GET /v1/models/{id}`` with the official openai SDK: only the
models a key may use are visible, and one it may not use looks exactly like one that
does not exist."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.factories import allow_models, key_create, model_create, provider_create, records_wait


@pytest.fixture
def models(gateway, fake_upstream):
    provider = provider_create(fake_upstream.url)
    chat = model_create("gpt-4o-mini", provider, upstream_model="upstream-mini")
    model_create("team-b/secret-model", provider)
    issued = key_create()
    allow_models(issued.key, chat)
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    return gateway, client, issued


def test_retrieve_a_model_the_key_may_use(models):
    gateway, client, issued = models
    model = client.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "odock")
    assert model.created > 0
    [listed] = client.models.list().data
    assert listed == model  # the same object the list shows
    records = records_wait(gateway, 2)
    retrieve = min(records, key=lambda r: r.created_at)
    assert (retrieve.endpoint, retrieve.status_code) == ("models", 200)
    assert retrieve.model_requested == "gpt-4o-mini" and retrieve.key_id == issued.key.pk


@pytest.mark.parametrize("name", ["team-b/secret-model", "no-such-model"])
def test_a_model_the_key_may_not_use_is_not_found(models, name):
    """Same status, code and message shape for a forbidden and a missing model: a key
    cannot probe for another team's model names."""
    gateway, client, _issued = models
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve(name)
    assert info.value.body == {
        "message": f"The model '{name}' does not exist.",
        "type": "invalid_request_error",
        "code": "model_not_found",
        "param": "model",
    }
    [record] = records_wait(gateway, 1)
    assert (record.endpoint, record.status_code) == ("models", 404)
    assert record.model_requested == name


def test_retrieve_needs_a_key_and_a_name(models):
    gateway, _client, issued = models
    assert httpx.get(gateway.url + "/v1/models/gpt-4o-mini").status_code == 401
    auth = {"Authorization": f"Bearer {issued.secret}"}
    empty = httpx.get(gateway.url + "/v1/models/", headers=auth)
    assert empty.status_code == 404 and empty.json()["error"]["code"] == "model_not_found"
    # Only GET is served there.
    refused = httpx.delete(gateway.url + "/v1/models/gpt-4o-mini", headers=auth)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "unknown_endpoint"


def test_a_name_with_a_slash_is_one_id(models):
    gateway, _client, _issued = models
    unrestricted = key_create()
    gateway.snapshots.reload()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=unrestricted.secret)
    assert client.models.retrieve("team-b/secret-model").id == "team-b/secret-model"
