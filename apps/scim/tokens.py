"""SCIM bearer tokens: issue (the secret is returned once), revoke, authenticate.

Stored like the management API's admin tokens: a visible prefix and an HMAC digest under
the key pepper, so a stolen database alone cannot test guessed tokens.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.utils import timezone

from apps.core.tokens import token_touch
from apps.keys.secrets import key_digest
from apps.scim.models import SCIM_TOKEN_PREFIX, ScimToken
from apps.tenancy.models import Organization

VISIBLE_PREFIX_LENGTH = len(SCIM_TOKEN_PREFIX) + 6
MAX_SECRET_LENGTH = 200


class IssuedScimToken(NamedTuple):
    token: ScimToken
    secret: str  # shown once, never stored


def scim_token_digest(secret: str) -> str:
    return key_digest(secret, settings.ODOCK_KEY_PEPPER)


def scim_token_issue(
    *, organization: Organization, name: str, expires_at: datetime | None = None
) -> IssuedScimToken:
    """A new token for ``organization``; the secret exists only in the return value."""
    secret = SCIM_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ScimToken(
        organization=organization,
        name=name,
        expires_at=expires_at,
        prefix=secret[:VISIBLE_PREFIX_LENGTH],
        digest=scim_token_digest(secret),
    )
    token.full_clean()
    token.save()
    return IssuedScimToken(token=token, secret=secret)


def scim_token_revoke(*, token: ScimToken) -> ScimToken:
    """Idempotent: revoking twice keeps the first revocation time."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def scim_token_authenticate(*, secret: str) -> ScimToken | None:
    """The live token this secret belongs to, or None (unknown, revoked or expired).

    Looked up by HMAC digest (a caller cannot steer it byte by byte), then re-compared in
    constant time in case the database matched loosely.
    """
    if not secret.startswith(SCIM_TOKEN_PREFIX) or len(secret) > MAX_SECRET_LENGTH:
        return None
    digest = scim_token_digest(secret)
    token = (
        ScimToken.objects.select_related("organization")
        .filter(digest=digest, revoked_at__isnull=True)
        .first()
    )
    if token is None or not hmac.compare_digest(token.digest, digest) or token.is_expired:
        return None
    token_touch(token=token)
    return token
