"""Who may see the dashboard, and what of it: the person's SPEND area.

The dashboard is the spend view (``Capability.SPEND``: platform and org admins, team
admins, finance). Its pages, every chart's JSON and the live feed show only that area —
an organisation's finance person sees that organisation, a team admin their team — and a
person without it gets a 403 (a closed websocket for the feed). The live feed's rows
follow the same SPEND area, not the AUDIT one: the feed sits next to the charts, carries
each request's cost and no content or findings, so it shows exactly the requests the
charts count; an auditor reads the request log itself (admin, API).
"""

from __future__ import annotations

from typing import Any

from apps.identity.roles import Capability
from apps.identity.scope import Area, scope_for


def spend_area(user: Any) -> Area:
    """The part of the hierarchy whose spend ``user`` may watch (empty: none)."""
    return scope_for(user).area(Capability.SPEND)


def may_watch(user: Any) -> bool:
    return not spend_area(user).empty


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
