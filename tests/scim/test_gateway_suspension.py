"""Through the gateway (real HTTP, the openai SDK): a key whose owner SCIM deactivated is
refused, and works again, with the same secret, once SCIM reactivates them."""

from __future__ import annotations

import httpx
import openai
import pytest
from django.contrib.auth import get_user_model

from tests.factories import key_create, model_create, project_create, provider_create, team_create
from tests.scim.conftest import PATCH_URN, USER_URN, tenant

MESSAGES = [{"role": "user", "content": "hello"}]


def _chat(gateway, secret: str):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    return client.chat.completions.create(model="alpha", messages=MESSAGES)


def test_a_suspended_key_is_refused_until_its_owner_is_reactivated(
    short_connections, gateway, fake_upstream
):
    model_create("alpha", provider_create(fake_upstream.url))
    acme = tenant()
    scim = httpx.Client(
        base_url=gateway.url + "/scim/v2",
        headers={"Authorization": f"Bearer {acme.secret}", "Content-Type": "application/scim+json"},
        timeout=10,
    )
    created = scim.post("/Users", json={"schemas": [USER_URN], "userName": "ada"})
    assert created.status_code == 201
    user = get_user_model().objects.get(username="ada")
    issued = key_create(project=project_create(team_create(acme.org)), owner=user)
    bystander = key_create(project=issued.key.project)
    gateway.snapshots.reload()
    assert _chat(gateway, issued.secret).choices

    def set_active(active: bool) -> None:
        body = {
            "schemas": [PATCH_URN],
            "Operations": [{"op": "replace", "path": "active", "value": active}],
        }
        response = scim.patch(f"/Users/{created.json()['id']}", json=body)
        assert response.status_code == 200 and response.json()["active"] is active
        gateway.snapshots.reload()

    set_active(False)
    with pytest.raises(openai.AuthenticationError) as refused:
        _chat(gateway, issued.secret)
    assert refused.value.response.status_code == 401
    assert refused.value.response.json()["error"]["code"] == "key_inactive"
    assert _chat(gateway, bystander.secret).choices  # another person's key is unaffected
    upstream_calls = len(fake_upstream.requests)

    set_active(True)
    assert _chat(gateway, issued.secret).choices
    assert len(fake_upstream.requests) == upstream_calls + 1  # the refusal never went upstream
    scim.close()
