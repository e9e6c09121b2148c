"""Writes to admin tokens: issue (the secret is returned once), revoke, and the lookup the
API's auth class relies on."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.utils import timezone

from apps.api.models import ADMIN_TOKEN_PREFIX, AdminToken
from apps.core.tokens import token_touch
from apps.identity.models import Role
from apps.keys.secrets import key_digest
from apps.tenancy.models import Organization, Team

VISIBLE_PREFIX_LENGTH = len(ADMIN_TOKEN_PREFIX) + 6
# An issued secret is about 55 characters; the bound (SCIM's too) keeps a megabyte bearer
# from being hashed and sent to the database on every unauthenticated call.
MAX_SECRET_LENGTH = 200


class IssuedAdminToken(NamedTuple):
    token: AdminToken
    secret: str  # shown once, never stored


def admin_token_digest(secret: str) -> str:
    """Same keyed digest as virtual keys: a stolen database alone cannot test guesses."""
    return key_digest(secret, settings.ODOCK_KEY_PEPPER)


def admin_token_issue(
    *,
    name: str,
    organization: Organization | None = None,
    role: str | None = None,
    team: Team | None = None,
    expires_at: datetime | None = None,
) -> IssuedAdminToken:
    """A new token; ``organization=None`` makes it platform-wide (a platform admin). The
    role defaults to org admin of ``organization``; team admin, finance and auditor tokens
    can be limited to a ``team`` of it. ValidationError for a role that does not fit. The
    secret exists only in the return value."""
    if role is None:
        role = Role.PLATFORM_ADMIN if organization is None else Role.ORG_ADMIN
    secret = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AdminToken(
        name=name,
        organization=organization,
        role=role,
        team=team,
        expires_at=expires_at,
        prefix=secret[:VISIBLE_PREFIX_LENGTH],
        digest=admin_token_digest(secret),
    )
    token.full_clean()
    token.save()
    return IssuedAdminToken(token=token, secret=secret)


def admin_token_revoke(*, token: AdminToken) -> AdminToken:
    """Idempotent: revoking twice keeps the first revocation time."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def admin_token_authenticate(*, secret: str) -> AdminToken | None:
    """The live token this secret belongs to, or None (unknown, revoked or expired).

    The lookup is by HMAC digest, which a caller cannot steer byte by byte, so the index
    lookup's timing says nothing about the secret; compare_digest re-checks the row in
    constant time in case the database matched loosely (e.g. a case-insensitive collation).
    """
    if not secret.startswith(ADMIN_TOKEN_PREFIX) or len(secret) > MAX_SECRET_LENGTH:
        return None
    digest = admin_token_digest(secret)
    token = (
        AdminToken.objects.select_related("organization", "team__organization")
        .filter(digest=digest, revoked_at__isnull=True)
        .first()
    )
    if token is None or not hmac.compare_digest(token.digest, digest) or token.is_expired:
        return None
    token_touch(token=token)
    return token
