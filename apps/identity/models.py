"""People in the hierarchy: a membership gives a user a role at one level.

A role granted at a level covers that level's subtree (an organisation's teams, projects
and keys; a team's projects and keys), never its parent or its siblings. What each role
may do is :mod:`apps.identity.roles`; what a person may see is :mod:`apps.identity.scope`.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from apps.tenancy.models import Organization, Project, Team


class Role(models.TextChoices):
    PLATFORM_ADMIN = "platform_admin", "Platform admin (everything)"
    ORG_ADMIN = "org_admin", "Organisation admin (its organisation's subtree)"
    TEAM_ADMIN = "team_admin", "Team admin (its team's projects, keys, budgets and limits)"
    FINANCE = "finance", "Finance (spend, reports, budgets read-only, dashboard)"
    AUDITOR = "auditor", "Auditor (audit log, verification, evidence, change trail; read-only)"
    MEMBER = "member", "Member (self-service portal: own keys, own spend)"


class MembershipSource(models.TextChoices):
    MANUAL = "manual", "Granted by an administrator"
    SSO = "sso", "Mapped from an SSO claim at sign-in"
    SCIM = "scim", "Provisioned by SCIM"


#: The levels each role may be granted at (a platform admin is granted at none).
ROLE_LEVELS: dict[str, tuple[str, ...]] = {
    Role.PLATFORM_ADMIN: (),
    Role.ORG_ADMIN: ("organization",),
    Role.TEAM_ADMIN: ("team",),
    Role.FINANCE: ("organization", "team"),
    Role.AUDITOR: ("organization", "team"),
    Role.MEMBER: ("organization", "team", "project"),
}

LEVELS = ("organization", "team", "project")


def _at_most_one_level() -> models.CheckConstraint:
    none = Q(organization__isnull=True, team__isnull=True, project__isnull=True)
    org = Q(organization__isnull=False, team__isnull=True, project__isnull=True)
    team = Q(organization__isnull=True, team__isnull=False, project__isnull=True)
    project = Q(organization__isnull=True, team__isnull=True, project__isnull=False)
    return models.CheckConstraint(
        condition=none | org | team | project, name="membership_at_most_one_level"
    )


def _one_grant_per_level() -> list[models.UniqueConstraint]:
    """A role once per person and level: one constraint per level (rather than one with
    ``nulls_distinct``, which SQLite, the embedded default, does not support)."""
    unique = [
        models.UniqueConstraint(
            fields=["user", "role"],
            condition=Q(organization__isnull=True, team__isnull=True, project__isnull=True),
            name="membership_unique_platform",
        )
    ]
    for level in LEVELS:
        unique.append(
            models.UniqueConstraint(
                fields=["user", "role", level],
                condition=Q(**{f"{level}__isnull": False}),
                name=f"membership_unique_{level}",
            )
        )
    return unique


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="members"
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="members"
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="members"
    )
    source = models.CharField(
        max_length=10,
        choices=MembershipSource.choices,
        default=MembershipSource.MANUAL,
        help_text="SSO and SCIM memberships are replaced by their source; manual ones are kept.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user_id", "role"]
        constraints = [
            _at_most_one_level(),
            *_one_grant_per_level(),
        ]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display().split(' (')[0]} of {self.level}"

    @property
    def level(self) -> str:
        """``org:acme``, ``team:acme/search``, ``project:acme/search/web`` or ``platform``."""
        if self.project_id is not None:
            return f"project:{self.project}"
        if self.team_id is not None:
            return f"team:{self.team}"
        if self.organization_id is not None:
            return f"org:{self.organization}"
        return "platform"

    @property
    def level_name(self) -> str | None:
        for level in LEVELS:
            if getattr(self, f"{level}_id") is not None:
                return level
        return None

    def clean(self) -> None:
        allowed = ROLE_LEVELS.get(self.role)
        if allowed is None:
            return  # the field's own choices report it
        level = self.level_name
        if not allowed and level is not None:
            raise ValidationError("A platform admin is granted at no level: leave them blank.")
        if allowed and level not in allowed:
            names = " or ".join(allowed)
            raise ValidationError(f"A {self.role} membership is granted at the {names} level.")
