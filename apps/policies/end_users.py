"""Writes to end-user policies (the limits an application's end customers carry).

A module of its own rather than ``services.py``: end-user policies are not rules on a
level of the hierarchy (``scoped_rules_sync``) but one organisation's list, matched by
the end-user id or pattern they name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from apps.core.services import SyncResult, rows_sync
from apps.policies.models import EndUserPolicy
from apps.tenancy.models import Organization


def end_user_policies_sync(
    *, organization: Organization, policies: Sequence[tuple[str, Mapping[str, Any]]]
) -> SyncResult:
    """Make ``organization``'s end-user policies exactly ``policies`` ((end_user, values)
    pairs), saving only what changed. A policy failing validation raises ``RowInvalid``
    with its index."""
    where = f"organization {organization.name}"
    return rows_sync(
        existing=EndUserPolicy.objects.filter(organization=organization).order_by("pk"),
        natural=lambda row: row.end_user,
        desired=list(policies),
        new=lambda end_user: EndUserPolicy(organization=organization, end_user=end_user),
        label=lambda row: f"end-user policy on {where} (end_user:{row.end_user})",
    )
