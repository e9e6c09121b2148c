"""Rule forms refuse rules that would do nothing: a rate limit with no limit, a model
listed twice at one level (standalone admin and the level pages' inlines)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.policies.models import ModelAccess, RateLimit
from tests.admin.conftest import RULE_INLINES, empty_inlines

NO_LIMIT = "Set at least one of requests per minute, tokens per minute or concurrent requests"


def project_page_form(world, **new_rows: list[dict[str, str]]) -> dict[str, object]:
    """The project change form: its key row, its rate limit row, and new inline rows."""
    data: dict[str, object] = {
        "team": world.team.pk,
        "name": world.project.name,
        "is_active": "on",
        "keys-TOTAL_FORMS": "1",
        "keys-INITIAL_FORMS": "1",
        "keys-0-id": world.issued.key.pk,
        "keys-0-project": world.project.pk,
        **empty_inlines("budget"),
        "ratelimit-TOTAL_FORMS": "1",
        "ratelimit-INITIAL_FORMS": "1",
        "ratelimit-0-id": world.rate_limit.pk,
        "ratelimit-0-project": world.project.pk,
        "ratelimit-0-rpm": "60",
        **empty_inlines(*RULE_INLINES[2:]),
    }
    for prefix, rows in new_rows.items():
        first = int(data[f"{prefix}-TOTAL_FORMS"])  # type: ignore[call-overload]
        data[f"{prefix}-TOTAL_FORMS"] = str(first + len(rows))
        for index, fields in enumerate(rows, start=first):
            data.update({f"{prefix}-{index}-{name}": value for name, value in fields.items()})
    return data


@pytest.mark.django_db
def test_rate_limit_with_every_limit_blank_is_refused(admin_client, world):
    url = reverse("admin:policies_ratelimit_add")
    before = RateLimit.objects.count()

    response = admin_client.post(
        url, {"team": world.team.pk, "rpm": "", "tpm": "", "max_concurrency": ""}
    )

    assert response.status_code == 200
    assert NO_LIMIT in response.content.decode()
    assert RateLimit.objects.count() == before

    response = admin_client.post(url, {"team": world.team.pk, "max_concurrency": "4"})
    assert response.status_code == 302
    assert RateLimit.objects.get(team=world.team).max_concurrency == 4


@pytest.mark.django_db
def test_rate_limit_field_error_is_not_buried_under_the_blank_rule(admin_client, world):
    response = admin_client.post(
        reverse("admin:policies_ratelimit_add"), {"team": world.team.pk, "rpm": "lots"}
    )
    html = response.content.decode()
    assert "Enter a whole number." in html
    assert NO_LIMIT not in html


@pytest.mark.django_db
def test_rate_limit_emptied_on_its_level_page_is_refused(admin_client, world):
    url = reverse("admin:tenancy_project_change", args=[world.project.pk])
    data = project_page_form(world)
    data["ratelimit-0-rpm"] = ""

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert NO_LIMIT in response.content.decode()
    world.rate_limit.refresh_from_db()
    assert world.rate_limit.rpm == 60


@pytest.mark.django_db
def test_duplicate_model_access_at_one_level_is_refused(admin_client, world):
    # world: the key allows gpt-4o-mini.
    url = reverse("admin:policies_modelaccess_add")

    response = admin_client.post(url, {"key": world.issued.key.pk, "model": world.model.pk})

    assert response.status_code == 200
    assert (
        "key:assistant-prod already allows gpt-4o-mini; a model is listed once per level."
        in response.content.decode()
    )
    assert ModelAccess.objects.filter(key=world.issued.key).count() == 1

    # The same model at another level is a different rule.
    response = admin_client.post(url, {"team": world.team.pk, "model": world.model.pk})
    assert response.status_code == 302


@pytest.mark.django_db
def test_editing_a_model_access_rule_is_not_a_duplicate_of_itself(admin_client, world):
    url = reverse("admin:policies_modelaccess_change", args=[world.access.pk])
    response = admin_client.post(url, {"key": world.issued.key.pk, "model": world.model.pk})
    assert response.status_code == 302


@pytest.mark.django_db
def test_duplicate_model_access_in_a_level_page_inline_is_refused(admin_client, world):
    url = reverse("admin:tenancy_project_change", args=[world.project.pk])
    row = {"project": str(world.project.pk), "model": str(world.model.pk)}

    twice = admin_client.post(url, project_page_form(world, modelaccess=[row, row]))
    assert twice.status_code == 200
    assert "gpt-4o-mini is listed twice; list each model once." in twice.content.decode()
    assert not ModelAccess.objects.filter(project=world.project).exists()

    ModelAccess.objects.create(project=world.project, model=world.model)
    again = admin_client.post(url, project_page_form(world, modelaccess=[row]))
    assert again.status_code == 200
    assert "project:assistant already allows gpt-4o-mini" in again.content.decode()
    assert ModelAccess.objects.filter(project=world.project).count() == 1
