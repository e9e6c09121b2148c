"""Encryption at rest for secrets the gateway must be able to use (provider API keys).

Fernet (AES-128-CBC + HMAC) from ``cryptography``; MultiFernet so keys can be rotated:
the first key in ``ODOCK_ENCRYPTION_KEYS`` encrypts, all of them decrypt.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def _as_fernet_key(raw: str) -> bytes:
    """Accept a real Fernet key, or derive one from any other string (embedded default)."""
    try:
        if len(base64.urlsafe_b64decode(raw.encode())) == 32:
            return raw.encode()
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(_as_fernet_key(k)) for k in settings.ODOCK_ENCRYPTION_KEYS])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:  # wrong key: say so without echoing anything
        raise ValueError("cannot decrypt secret: encryption key mismatch") from exc


def encrypt_bytes(data: bytes) -> bytes:
    return _fernet().encrypt(data)


def decrypt_bytes(token: bytes) -> bytes:
    """Raises ``ValueError`` if the token was not made with one of the keys (or altered)."""
    try:
        return _fernet().decrypt(token)
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: encryption key mismatch or altered data") from exc
