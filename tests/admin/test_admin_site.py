"""The admin's navigation sections and the number formats of its pages."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from apps.core.admin import ms_text, number_text, usd_text
from odock.admin_site import MORE, guided_flows, sections_from


def app(label: str, *models: str) -> dict:
    return {
        "name": label.title(),
        "app_label": label,
        "app_url": f"/admin/{label}/",
        "models": [{"object_name": m, "name": m, "admin_url": f"/{m}/"} for m in models],
    }


def test_sections_follow_the_hierarchy_and_keep_unknown_models():
    apps = [
        app("audit", "RequestLog", "ContentCapture"),
        app("keys", "VirtualKey"),
        app("tenancy", "Organization", "Project", "Team"),
        app("newapp", "Gadget"),
        app("policies", "Budget"),
    ]
    sections = sections_from(apps)
    assert [s["name"] for s in sections] == ["Hierarchy", "Policies", "Audit", MORE]
    hierarchy = [m["object_name"] for m in sections[0]["models"]]
    assert hierarchy == ["Organization", "Team", "Project", "VirtualKey"]
    # Content capture is a rule (policies), whichever app defines it.
    assert [m["object_name"] for m in sections[1]["models"]] == ["Budget", "ContentCapture"]
    assert sections[-1]["models"][0]["object_name"] == "Gadget"


def test_a_person_sees_only_sections_with_something_in_them():
    assert sections_from([app("keys", "VirtualKey")])[0]["name"] == "Hierarchy"
    assert sections_from([]) == []


def test_guided_flows_are_linked_only_when_installed():
    flows = guided_flows()
    for url, _label in flows:
        assert url.startswith("/")
    try:
        reverse("onboarding:new-team")
    except Exception:
        assert flows == []


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (0.0, "0.0"), (8.572397000079945, "8.6"), (12.5, "12"), (2409.4, "2,409")],
)
def test_durations_read_as_milliseconds(value, text):
    assert ms_text(value) == text


def test_limits_and_money_for_people():
    assert number_text(Decimal("100.000000")) == "100"
    assert number_text(Decimal("0.500000")) == "0.5"
    assert usd_text(Decimal("100.000000")) == "$100.00"
    assert usd_text(Decimal("0.000004950000")) == "$0.000005"
    assert usd_text(Decimal("-1.5")) == "-$1.50"
    assert usd_text(None) == "—"


@pytest.mark.django_db
def test_view_site_and_the_sections_page(admin_client, world):
    from django.contrib import admin

    page = admin_client.get(reverse("admin-sections")).content.decode()
    assert str(admin.site.site_url) == reverse("dashboard:index")  # set with the URLs
    assert f'href="{reverse("dashboard:index")}">View site' in page
    page = page.split('id="content-main"', 1)[1]  # the list, not the navigation bar
    assert page.index("Hierarchy") < page.index("Policies") < page.index("Providers")
    assert page.index("Providers") < page.index("Audit") < page.index("Reports")
    assert page.index("Reports") < page.index("Compliance")
