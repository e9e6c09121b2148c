"""Writes from the portal: a person mints, rotates and revokes their own keys.

A key minted here is held to its team's policy: its models are a subset of what every
level above allows, it expires no later than the lifetime rule allows, and its optional
budget and rate limit are no looser than any parent's (``apps.identity.limits``). The key
and its rules are created in one transaction: a refusal leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.identity.limits import looser_than_parents, model_access_not_allowed_by_parents
from apps.keys.models import VirtualKey
from apps.keys.services import IssuedKey, key_issue, key_revoke, key_rotate
from apps.policies.models import Budget, ModelAccess, RateLimit
from apps.portal.selectors import max_key_lifetime_days
from apps.providers.models import Model
from apps.tenancy.models import Project


@dataclass(frozen=True)
class KeyRequest:
    """What the person asked for (already parsed by the form)."""

    project: Project
    name: str
    lifetime_days: int
    models: list[str] = field(default_factory=list)
    budget_usd: Decimal | None = None
    budget_period: str = "monthly"
    rpm: int | None = None
    tpm: int | None = None


def _refuse(field_name: str, message: str) -> ValidationError:
    return ValidationError({field_name: message})


@transaction.atomic
def portal_key_create(*, owner: Any, request: KeyRequest) -> IssuedKey:
    """Issue a key owned by ``owner`` with its key-level rules, or raise ValidationError
    (by form field) and create nothing. The caller checked ``owner`` is a member of the
    project."""
    longest = max_key_lifetime_days(request.project)
    if request.lifetime_days < 1 or request.lifetime_days > longest:
        raise _refuse(
            "lifetime_days",
            f"A key in this project may live at most {longest} days "
            f"(asked: {request.lifetime_days}).",
        )
    expires_at = timezone.now() + timedelta(days=request.lifetime_days)
    try:  # key_issue is atomic itself: a savepoint here, so the check below can run
        issued = key_issue(
            project=request.project, name=request.name, owner=owner, expires_at=expires_at
        )
    except (ValidationError, IntegrityError):
        if VirtualKey.objects.filter(project=request.project, name=request.name).exists():
            raise _refuse("name", f"A key named {request.name!r} already exists here.") from None
        raise
    key = issued.key
    models = {m.name: m for m in Model.objects.filter(name__in=request.models)}
    for name in request.models:
        model = models.get(name)
        if model is None:
            raise _refuse("models", f"Unknown model {name!r}.")
        access = ModelAccess(key=key, model=model)
        why = model_access_not_allowed_by_parents(access)
        if why:
            raise _refuse("models", why)
        access.full_clean()
        access.save()
    if request.budget_usd is not None:
        budget = Budget(
            key=key, limit_usd=request.budget_usd, period=request.budget_period, hard=True
        )
        why = looser_than_parents(budget)  # before full_clean: it says so too, unattached
        if why:
            raise _refuse("budget_usd", why)
        budget.full_clean()
        budget.save()
    if request.rpm is not None or request.tpm is not None:
        limit = RateLimit(key=key, rpm=request.rpm, tpm=request.tpm)
        why = looser_than_parents(limit)
        if why:
            raise _refuse("tpm" if why.startswith("tpm") else "rpm", why)
        limit.full_clean()
        limit.save()
    return issued


def portal_key_revoke(*, key: VirtualKey) -> VirtualKey:
    """Revoke one's own key (idempotent)."""
    return key_revoke(key=key)


def portal_key_rotate(*, key: VirtualKey) -> IssuedKey:
    """A new secret, shown once; the old one keeps working for the default grace."""
    if key.is_revoked:
        raise ValidationError("A revoked key cannot be rotated; mint a new one.")
    return key_rotate(key=key)
