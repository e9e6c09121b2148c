"""Reads about virtual keys for the control plane (the gateway reads its snapshot)."""

from __future__ import annotations

from apps.keys.models import VirtualKey
from apps.tenancy.models import Project


def key_get_by_name(*, project: Project, name: str) -> VirtualKey | None:
    return VirtualKey.objects.filter(project=project, name=name).first()
