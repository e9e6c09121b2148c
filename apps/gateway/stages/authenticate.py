"""Stage 1, authenticate: the virtual key in the request → its identity, from the policy
snapshot (no database)."""

from __future__ import annotations

import time
from collections.abc import Callable

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import unauthorized
from apps.keys.secrets import KEY_PREFIX

INACTIVE = "key suspended, or its owner, organisation, team or project inactive"


class Authenticate:
    """Virtual key → identity, from the snapshot (no database)."""

    name = StageName.AUTHENTICATE

    def __init__(self, digest: Callable[[str], str]) -> None:
        self._digest = digest  # secret -> keyed digest

    async def run(self, ctx: RequestContext) -> None:
        header = ctx.authorization
        if not header:
            ctx.decide(self.name, Outcome.DENY, "missing key")
            raise unauthorized(
                "Missing API key. Send it as 'Authorization: Bearer sk-odock-…'.",
                code="missing_api_key",
            )
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            ctx.decide(self.name, Outcome.DENY, "malformed key")
            raise unauthorized("Malformed API key: expected 'Authorization: Bearer sk-odock-…'.")
        entry = ctx.snapshot.keys_by_digest.get(self._digest(secret))
        if entry is None:
            ctx.decide(self.name, Outcome.DENY, "unknown key")
            raise unauthorized("Incorrect API key provided.")
        ctx.key = entry
        now = time.time()
        if entry.revoked:
            ctx.decide(self.name, Outcome.DENY, "revoked key")
            raise unauthorized("This API key has been revoked.", code="key_revoked")
        if entry.expires_at is not None and entry.expires_at <= now:
            ctx.decide(self.name, Outcome.DENY, "expired key")
            raise unauthorized("This API key has expired.", code="key_expired")
        if entry.valid_until is not None and entry.valid_until <= now:
            ctx.decide(self.name, Outcome.DENY, "rotated key past its grace period")
            raise unauthorized(
                "This API key was rotated and is no longer valid.", code="key_rotated"
            )
        if not entry.active:
            ctx.decide(self.name, Outcome.DENY, INACTIVE)
            raise unauthorized(
                "This API key is suspended, or its owner, organisation, team or project is "
                "inactive.",
                code="key_inactive",
            )
        ctx.decide(self.name, Outcome.ALLOW, f"key {entry.identity.key_prefix}")
        if entry.capture_mode != "none":
            ctx.capture_limit = entry.capture_max_bytes
            ctx.captured = bytearray()
