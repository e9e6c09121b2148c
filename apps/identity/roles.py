"""What each role may do, as capabilities: the one table the admin, the API, the
dashboard, the reports and the portal read.

* ``manage`` — change configuration (levels, keys, budgets, limits, access rules) in the
  subtree; writes are still held to "no looser than the parent" (``apps.identity.limits``);
* ``configure`` — see configuration read-only (every administrative role);
* ``spend`` — spend reports, usage roll-ups, the dashboard and the live feed, budgets;
* ``audit`` — the request log, audit verification, evidence packs and the change trail;
* ``members`` — grant and revoke memberships in the subtree (never a role above one's own);
* ``self`` — the portal: one's own keys, spend and records.
"""

from __future__ import annotations

from enum import StrEnum

from apps.identity.models import Role


class Capability(StrEnum):
    MANAGE = "manage"
    CONFIGURE = "configure"
    SPEND = "spend"
    AUDIT = "audit"
    MEMBERS = "members"
    SELF = "self"


CAPABILITIES: dict[str, frozenset[Capability]] = {
    Role.PLATFORM_ADMIN: frozenset(Capability),
    Role.ORG_ADMIN: frozenset(Capability),
    Role.TEAM_ADMIN: frozenset(
        {
            Capability.MANAGE,
            Capability.CONFIGURE,
            Capability.SPEND,
            Capability.AUDIT,
            Capability.MEMBERS,
            Capability.SELF,
        }
    ),
    Role.FINANCE: frozenset({Capability.CONFIGURE, Capability.SPEND, Capability.SELF}),
    Role.AUDITOR: frozenset({Capability.CONFIGURE, Capability.AUDIT, Capability.SELF}),
    Role.MEMBER: frozenset({Capability.SELF}),
}

#: Roles that use the admin (a member only has the portal).
ADMIN_ROLES = frozenset(
    {Role.PLATFORM_ADMIN, Role.ORG_ADMIN, Role.TEAM_ADMIN, Role.FINANCE, Role.AUDITOR}
)

#: Who may grant which roles: never a role above one's own.
GRANTABLE: dict[str, frozenset[str]] = {
    Role.PLATFORM_ADMIN: frozenset(Role),
    Role.ORG_ADMIN: frozenset(
        {Role.ORG_ADMIN, Role.TEAM_ADMIN, Role.FINANCE, Role.AUDITOR, Role.MEMBER}
    ),
    Role.TEAM_ADMIN: frozenset({Role.TEAM_ADMIN, Role.MEMBER}),
}
