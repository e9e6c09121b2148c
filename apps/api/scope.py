"""What an admin token may see and do: its role at its level, resolved into the same
:class:`~apps.identity.scope.Scope` a person's memberships give, so the API applies the
one capability table (``apps.identity.roles.CAPABILITIES``) and the same ``Area`` filters
as the admin, the dashboard and the reports.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from apps.api.models import AdminToken
from apps.identity.roles import CAPABILITIES, Capability
from apps.identity.scope import Area, Scope

_CACHE_ATTR = "_odock_scope"


def token_scope(token: AdminToken) -> Scope:
    """The token as one membership: its role at its team, else at its organisation; a
    platform-wide token is a platform admin (cached on the token for the request)."""
    cached = getattr(token, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    if token.is_platform:
        scope = Scope(user_id=None, platform=True)
    else:
        if token.team_id is not None:
            area = Area(team_ids=frozenset({token.team_id}))
            row = (token.role, None, token.team_id, None)
        else:
            area = Area(org_ids=frozenset({token.organization_id}))
            row = (token.role, token.organization_id, None, None)
        areas = {capability: area for capability in CAPABILITIES.get(token.role, ())}
        scope = Scope(user_id=None, platform=False, memberships=(row,), _areas=areas)
    setattr(token, _CACHE_ATTR, scope)
    return scope


def token_area(token: AdminToken, capability: Capability) -> Area:
    """The token's area for ``capability``; PermissionDenied (the API's 403) when its role
    has no such capability anywhere, e.g. a finance token creating a key."""
    area = token_scope(token).area(capability)
    if area.empty:
        raise PermissionDenied(f"a {token.role} token may not {DOING[capability]}")
    return area


DOING: dict[Capability, str] = {
    Capability.MANAGE: "change configuration (keys, budgets, limits, access rules)",
    Capability.CONFIGURE: "read configuration",
    Capability.SPEND: "read spend, budgets or reports",
    Capability.AUDIT: "read the audit log or the change trail",
    Capability.MEMBERS: "manage memberships",
    Capability.SELF: "use the portal",
}
