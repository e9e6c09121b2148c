"""Writes to the hierarchy: organisations, teams and projects, found by natural key
(a name, in its parent) and updated field by field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apps.core.services import Saved, model_save
from apps.tenancy.models import Organization, Project, Team


def organization_upsert(
    *, name: str, data: Mapping[str, Any], organization: Organization | None = None
) -> Saved[Organization]:
    """Create organisation ``name`` or update the fields of ``data`` that differ
    (``organization``: the stored row when the caller already has it)."""
    if organization is None:
        organization = Organization.objects.filter(name=name).first()
    instance = organization or Organization(name=name)
    return model_save(instance=instance, data={**data, "name": name})


def team_upsert(*, organization: Organization, name: str, data: Mapping[str, Any]) -> Saved[Team]:
    team = Team.objects.filter(organization=organization, name=name).first()
    return model_save(instance=team or Team(organization=organization, name=name), data=data)


def project_upsert(*, team: Team, name: str, data: Mapping[str, Any]) -> Saved[Project]:
    project = Project.objects.filter(team=team, name=name).first()
    return model_save(instance=project or Project(team=team, name=name), data=data)


def organization_field_validate(*, name: str, value: Any) -> None:
    """One Organization field's own rules (URL syntax, length), for checking input before
    anything is written; raises ValidationError."""
    Organization._meta.get_field(name).clean(value, None)


def organization_field_max_length(*, name: str) -> int | None:
    return Organization._meta.get_field(name).max_length
