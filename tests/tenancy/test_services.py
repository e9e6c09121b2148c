"""Hierarchy upserts: found by natural key (name in its parent), updated field by field."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.tenancy.models import Project, Team
from apps.tenancy.services import organization_upsert, project_upsert, team_upsert


@pytest.mark.django_db
def test_levels_are_found_by_name_in_their_parent():
    org = organization_upsert(name="acme", data={"display_name": "Acme"}).instance
    other = organization_upsert(name="globex", data={}).instance
    team = team_upsert(organization=org, name="search", data={}).instance
    team_upsert(organization=other, name="search", data={})

    again = team_upsert(organization=org, name="search", data={"is_active": False})
    project = project_upsert(team=team, name="assistant", data={}).instance

    assert again.instance.pk == team.pk and again.changed == ("is_active",)
    assert Team.objects.count() == 2
    assert Project.objects.get().team == team == project.team
    assert not organization_upsert(name="acme", data={"display_name": "Acme"}).wrote


@pytest.mark.django_db
def test_an_invalid_value_is_refused_before_saving():
    with pytest.raises(ValidationError) as caught:
        organization_upsert(name="acme", data={"alert_webhook_url": "not a url"})
    assert "alert_webhook_url" in caught.value.message_dict
