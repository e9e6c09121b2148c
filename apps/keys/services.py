"""Writes to virtual keys: issue, rotate, revoke. Each returns the secret only once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.services import model_update
from apps.keys.models import VirtualKey
from apps.keys.secrets import key_digest, key_secret_generate, key_visible_prefix
from apps.tenancy.models import Project


@dataclass(frozen=True)
class IssuedKey:
    key: VirtualKey
    secret: str  # shown once, never stored


def _digest(secret: str) -> str:
    return key_digest(secret, settings.ODOCK_KEY_PEPPER)


def key_set_secret(*, key: VirtualKey, secret: str) -> None:
    """Store a caller-chosen secret (odock_apply's ``secret:``) as its digest."""
    if not secret.startswith("sk-odock-") or len(secret) < 20:
        raise ValueError("a key secret must start with 'sk-odock-' and be at least 20 characters")
    key.digest = _digest(secret)
    key.prefix = key_visible_prefix(secret)


def key_secret_matches(*, key: VirtualKey, secret: str) -> bool:
    return key.digest == _digest(secret)


@transaction.atomic
def key_issue(
    *,
    project: Project,
    name: str,
    owner=None,
    expires_at: datetime | None = None,
    secret: str | None = None,
) -> IssuedKey:
    secret = secret or key_secret_generate()
    key = VirtualKey(project=project, name=name, owner=owner, expires_at=expires_at)
    key_set_secret(key=key, secret=secret)
    key.full_clean()
    key.save()
    return IssuedKey(key=key, secret=secret)


@transaction.atomic
def key_rotate(*, key: VirtualKey, grace: timedelta | None = None) -> IssuedKey:
    """New secret; the old one keeps working for ``grace`` so deployments can roll over."""
    if key.revoked_at is not None:
        raise ValueError("a revoked key cannot be rotated; issue a new key")
    if grace is None:
        grace = timedelta(seconds=settings.ODOCK_ROTATION_GRACE_SECONDS)
    secret = key_secret_generate()
    key.previous_digest = key.digest
    key.previous_valid_until = timezone.now() + grace
    key_set_secret(key=key, secret=secret)
    key.save()
    return IssuedKey(key=key, secret=secret)


# Revoke, suspend, resume and update write the key and, through its post_save signal, the
# change-log row (apps.configlog) that tells every gateway process to reload the key: one
# transaction, so a failure between cannot commit a revoked key the gateways never hear of.


@transaction.atomic
def key_revoke(*, key: VirtualKey) -> VirtualKey:
    """Refuse the key from now on, for good (idempotent: the first time is kept)."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


@transaction.atomic
def key_suspend(*, key: VirtualKey) -> VirtualKey:
    """Refuse the key until :func:`key_resume` (idempotent: the first time is kept)."""
    if key.suspended_at is None:
        key.suspended_at = timezone.now()
        key.save(update_fields=["suspended_at"])
    return key


@transaction.atomic
def key_resume(*, key: VirtualKey) -> VirtualKey:
    """Lift a suspension; a revoked key stays revoked."""
    if key.suspended_at is not None:
        key.suspended_at = None
        key.save(update_fields=["suspended_at"])
    return key


def key_secret_validate(*, secret: str) -> None:
    """The rule a caller-chosen secret must follow; raises ValueError."""
    key_set_secret(key=VirtualKey(), secret=secret)


@transaction.atomic
def key_update(
    *, key: VirtualKey, data: Mapping[str, Any], secret: str | None = None
) -> tuple[VirtualKey, list[str]]:
    """Set a new caller-chosen secret (stored as its digest) and the fields of ``data``
    that differ; returns the changed fields (``digest``/``prefix`` for the secret)."""
    values: dict[str, Any] = {}
    if secret is not None and not key_secret_matches(key=key, secret=secret):
        probe = VirtualKey()
        key_set_secret(key=probe, secret=secret)
        values.update(digest=probe.digest, prefix=probe.prefix)
    return model_update(instance=key, data={**values, **data})
