"""The same change through each door — the admin, the management API and odock_apply —
goes through the same services, so it leaves the same change-trail entry (only the actor
differs) and bad input is refused with the same message."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management.base import CommandError

from apps.api.services import admin_token_issue
from apps.compliance.models import ConfigChange
from apps.keys.models import VirtualKey
from apps.providers import services as provider_services
from apps.providers.models import Provider
from tests.compliance.conftest import admin_form_data, admin_url, post_form, trail_of
from tests.factories import (
    odock_apply_text,
    org_create,
    project_create,
    provider_create,
    team_create,
)

NEW_BASE = "http://127.0.0.1:9009/v1"


@pytest.fixture
def project(db):
    return project_create(team_create(org_create("acme"), "search"), "assistant")


def shape(change: ConfigChange) -> dict[str, Any]:
    """What a trail entry says about the change, leaving out who made it and when."""
    return {
        "action": change.action,
        "object_type": change.object_type,
        "organization_id": change.organization_id,
        "fields": sorted(change.changes),
        "secrets": sorted(k for k, v in change.changes.items() if v == "changed"),
    }


def key_created(name: str) -> ConfigChange:
    (change,) = trail_of(VirtualKey, VirtualKey.objects.get(name=name).pk, "create")
    return change


@pytest.mark.django_db
def test_a_key_created_through_each_door_leaves_the_same_trail_entry(
    admin_client, admin_user, client, project, tmp_path
):
    response = post_form(
        admin_client,
        admin_url(VirtualKey, "add"),
        {"project": str(project.pk), "name": "via-admin"},
    )
    assert response.status_code == 200  # the page that shows the secret once
    token = admin_token_issue(name="ci", organization=project.team.organization)
    response = client.post(
        "/api/v1/keys",
        {"project_id": project.pk, "name": "via-api"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token.secret}"},
    )
    assert response.status_code == 201, response.content
    odock_apply_text(
        tmp_path,
        """
organizations:
  - name: acme
    teams:
      - name: search
        projects:
          - name: assistant
            keys: [{name: via-file}]
""",
    )

    admin, api, file = (key_created(n) for n in ("via-admin", "via-api", "via-file"))

    assert shape(admin) == shape(api) == shape(file)
    assert "digest" in shape(admin)["secrets"]
    actors = [c.actor for c in (admin, api, file)]
    assert actors == [admin_user.username, "api token ci", "odock_apply"]


@pytest.mark.django_db
def test_a_provider_changed_in_the_admin_or_the_file_leaves_the_same_trail_entry(
    admin_client, tmp_path
):
    by_admin = provider_create("http://127.0.0.1:9001/v1", name="by-admin")
    by_file = provider_create("http://127.0.0.1:9001/v1", name="by-file")

    response = post_form(
        admin_client, admin_url(Provider, "change", by_admin.pk), {"api_base": NEW_BASE}
    )
    assert response.status_code == 302
    odock_apply_text(
        tmp_path, f"providers:\n  - {{name: by-file, kind: openai, api_base: '{NEW_BASE}'}}\n"
    )

    (admin,) = trail_of(Provider, by_admin.pk, "update")
    (file,) = trail_of(Provider, by_file.pk, "update")
    assert shape(admin) == shape(file)
    assert (
        admin.changes
        == file.changes
        == {"api_base": {"before": "http://127.0.0.1:9001/v1", "after": NEW_BASE}}
    )


@pytest.mark.django_db
def test_bad_provider_options_are_refused_with_the_same_message_by_every_door(
    admin_client, monkeypatch, tmp_path
):
    """The kind's own option rules (the provider registry's, stubbed here) reach the admin
    form and odock_apply's check through provider_options_validate alone."""
    monkeypatch.setattr(
        provider_services,
        "options_errors",
        lambda kind, options, **_: [] if "region" in options else [f"{kind} needs a region"],
    )
    provider = provider_create("http://127.0.0.1:9001/v1", name="aws", kind="bedrock")
    url = admin_url(Provider, "change", provider.pk)
    page = admin_client.get(url)
    response = admin_client.post(url, {**admin_form_data(page), "options": '{"auth": "bearer"}'})
    assert response.status_code == 200
    admin_errors = response.context["adminform"].form.errors["options"]

    with pytest.raises(CommandError) as caught:
        odock_apply_text(
            tmp_path,
            "providers:\n  - {name: aws, kind: bedrock, api_base: 'http://127.0.0.1:9001/v1',"
            " options: {auth: bearer}}\n",
        )

    assert list(admin_errors) == ["bedrock needs a region"]
    assert "providers[0].options: bedrock needs a region" in str(caught.value)
    assert Provider.objects.get(pk=provider.pk).options == {}
    assert not trail_of(Provider, provider.pk, "update")
