"""Generating and digesting virtual-key secrets. No ORM: the gateway imports this."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sk-odock-"
VISIBLE_PREFIX_LENGTH = len(KEY_PREFIX) + 6


def key_secret_generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(secret: str, pepper: str) -> str:
    """Keyed digest (HMAC-SHA256): a stolen database alone cannot test guessed keys."""
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def key_visible_prefix(secret: str) -> str:
    return secret[:VISIBLE_PREFIX_LENGTH]
