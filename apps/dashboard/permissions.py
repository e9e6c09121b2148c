"""Who may see the dashboard (its pages, JSON and live feed): active staff, as the admin."""

from __future__ import annotations

from typing import Any


def may_watch(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def same_origin(scope: dict[str, Any], trusted: list[str]) -> bool:
    """Django's CSRF rule for a websocket handshake: a browser's Origin must be this host
    (or a trusted origin), so another site cannot open the feed with a staff cookie, even
    with ``ALLOWED_HOSTS = *``. No Origin: not a browser, so no ambient cookie to abuse."""
    headers = dict(scope.get("headers") or [])
    origin = headers.get(b"origin", b"").decode("latin-1")
    if not origin:
        return True
    if origin in trusted:
        return True
    host = headers.get(b"host", b"").decode("latin-1")
    return bool(host) and origin.split("://", 1)[-1] == host
