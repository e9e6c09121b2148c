"""Provider API keys are write-only in the admin and encrypted in the database."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.providers.models import Provider
from tests.admin.conftest import UPSTREAM_KEY, raw_provider_api_key

ADD_URL = reverse("admin:providers_provider_add")


def provider_form(**overrides: str) -> dict[str, str]:
    data = {
        "name": "mistral",
        "kind": "openai_compatible",
        "api_base": "https://api.mistral.ai/v1",
        "api_key": "",
        "options": "{}",
        "is_active": "on",
        "deployments-TOTAL_FORMS": "0",
        "deployments-INITIAL_FORMS": "0",
    }
    return {**data, **overrides}


@pytest.mark.django_db
def test_api_key_is_encrypted_at_rest_and_never_rendered(admin_client, world):
    response = admin_client.post(ADD_URL, provider_form(api_key="sk-mistral-plain-77"))
    assert response.status_code == 302
    provider = Provider.objects.get(name="mistral")
    assert provider.api_key == "sk-mistral-plain-77"
    stored = raw_provider_api_key(provider)
    assert stored and stored != "sk-mistral-plain-77" and "sk-mistral-plain-77" not in stored

    change_url = reverse("admin:providers_provider_change", args=[provider.pk])
    for url in (
        change_url,
        reverse("admin:providers_provider_changelist"),
        reverse("admin:providers_provider_history", args=[provider.pk]),
    ):
        html = admin_client.get(url).content.decode()
        assert "sk-mistral-plain-77" not in html and stored not in html, url
    html = admin_client.get(change_url).content.decode()
    assert '<input type="password" name="api_key"' in html
    assert "leave blank to keep the current value" in html


@pytest.mark.django_db
def test_blank_api_key_keeps_the_stored_one_and_a_new_one_replaces_it(admin_client, world):
    provider = world.provider
    change_url = reverse("admin:providers_provider_change", args=[provider.pk])
    form = provider_form(name=provider.name, kind="openai", api_base="http://127.0.0.1:9009/v1")
    form["deployments-TOTAL_FORMS"] = form["deployments-INITIAL_FORMS"] = "1"

    response = admin_client.post(change_url, form)
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == UPSTREAM_KEY
    assert provider.api_base == "http://127.0.0.1:9009/v1"
    history = admin_client.get(reverse("admin:providers_provider_history", args=[provider.pk]))
    assert "API key" not in history.content.decode()  # a blank field is not a change

    response = admin_client.post(change_url, {**form, "api_key": "sk-rotated-upstream-1"})
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == "sk-rotated-upstream-1"


@pytest.mark.django_db
def test_provider_list_says_whether_a_key_is_set(admin_client, world):
    Provider.objects.create(name="keyless", kind="openai", api_base="http://127.0.0.1:9/v1")

    response = admin_client.get(reverse("admin:providers_provider_changelist"))

    html = response.content.decode()
    assert "API key set" in html
    assert 'alt="True"' in html and 'alt="False"' in html
    assert UPSTREAM_KEY not in html
