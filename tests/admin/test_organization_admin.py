"""The organisation form's "Outages and alerts" section: outage policy, alert webhook and
emails; the webhook secret is write-only (never rendered, blank keeps it)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.admin.conftest import WEBHOOK_SECRET, empty_inlines, raw_column


def org_form(world, **overrides: str) -> dict[str, object]:
    data: dict[str, object] = {
        "name": world.org.name,
        "display_name": "Acme",
        "is_active": "on",
        "outage_policy": "fail_closed",
        "alert_webhook_url": "https://hooks.example.com/odock",
        "alert_webhook_secret": "",
        "alert_emails": "",
        "response_retention_days": "30",
        "teams-TOTAL_FORMS": "1",
        "teams-INITIAL_FORMS": "1",
        "teams-0-id": world.team.pk,
        "teams-0-organization": world.org.pk,
        "teams-0-name": world.team.name,
        "teams-0-is_active": "on",
        **empty_inlines(),
    }
    return {**data, **overrides}


@pytest.fixture
def change_url(world) -> str:
    return reverse("admin:tenancy_organization_change", args=[world.org.pk])


@pytest.mark.django_db
def test_change_page_has_the_section_and_never_renders_the_secret(admin_client, world, change_url):
    html = admin_client.get(change_url).content.decode()

    assert "Outages and alerts" in html
    for name in ("outage_policy", "alert_webhook_url", "alert_emails"):
        assert f'name="{name}"' in html
    assert '<input type="password" name="alert_webhook_secret"' in html
    assert WEBHOOK_SECRET not in html
    assert raw_column(world.org, "alert_webhook_secret") not in html


@pytest.mark.django_db
def test_saving_sets_policy_and_alerts_and_a_blank_secret_keeps_it(admin_client, world, change_url):
    data = org_form(
        world,
        outage_policy="fail_open",
        alert_emails="ops@acme.io ,fin@acme.io",
        response_retention_days="7",
    )

    response = admin_client.post(change_url, data)

    assert response.status_code == 302, response.context and response.context["errors"]
    world.org.refresh_from_db()
    assert world.org.outage_policy == "fail_open"
    assert world.org.alert_webhook_url == "https://hooks.example.com/odock"
    assert world.org.alert_emails == "ops@acme.io, fin@acme.io"
    assert world.org.alert_webhook_secret == WEBHOOK_SECRET
    assert world.org.response_retention_days == 7


@pytest.mark.django_db
def test_a_typed_secret_replaces_the_stored_one_encrypted(admin_client, world, change_url):
    response = admin_client.post(change_url, org_form(world, alert_webhook_secret="whsec-new-42"))

    assert response.status_code == 302
    world.org.refresh_from_db()
    assert world.org.alert_webhook_secret == "whsec-new-42"
    assert "whsec-new-42" not in raw_column(world.org, "alert_webhook_secret")
    for url in (change_url, reverse("admin:tenancy_organization_history", args=[world.org.pk])):
        assert "whsec-new-42" not in admin_client.get(url).content.decode()


@pytest.mark.django_db
def test_an_invalid_form_does_not_echo_the_typed_secret(admin_client, world, change_url):
    data = org_form(world, alert_webhook_secret="whsec-typed-77", alert_emails="ops@acme.io, nope")

    response = admin_client.post(change_url, data)

    assert response.status_code == 200
    html = response.content.decode()
    assert "&#x27;nope&#x27; is not a valid email address." in html
    assert "whsec-typed-77" not in html and WEBHOOK_SECRET not in html
    world.org.refresh_from_db()
    assert world.org.alert_webhook_secret == WEBHOOK_SECRET
    assert world.org.alert_emails == ""


@pytest.mark.django_db
def test_unknown_outage_policy_is_refused(admin_client, world, change_url):
    response = admin_client.post(change_url, org_form(world, outage_policy="fail_sideways"))
    assert response.status_code == 200
    world.org.refresh_from_db()
    assert world.org.outage_policy == "fail_closed"
