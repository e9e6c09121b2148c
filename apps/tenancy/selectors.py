"""Reads about the hierarchy for the control plane."""

from __future__ import annotations

from apps.tenancy.models import Organization


def organization_get_by_name(*, name: str) -> Organization | None:
    return Organization.objects.filter(name=name).first()
