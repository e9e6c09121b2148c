"""Admin tokens: what callers of the management API present. Only a keyed digest is stored."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from apps.identity.models import Role
from apps.tenancy.models import Organization, Team

ADMIN_TOKEN_PREFIX = "odk-admin-"  # noqa: S105 - the public start of every token

#: The roles a token can hold: the people's roles (``apps.identity.roles.CAPABILITIES``
#: says what each may do). A platform-wide token (no organisation) is a platform admin.
TOKEN_ROLES = (Role.PLATFORM_ADMIN, Role.ORG_ADMIN, Role.TEAM_ADMIN, Role.FINANCE, Role.AUDITOR)
#: Roles a token may hold at a team (the others are organisation-wide).
TEAM_TOKEN_ROLES = (Role.TEAM_ADMIN, Role.FINANCE, Role.AUDITOR)


class AdminToken(models.Model):
    name = models.CharField(max_length=100, help_text="Who or what uses the token.")
    # CASCADE, never SET_NULL: a null organization means platform-wide scope, so losing the
    # organization must not silently widen what the token can see.
    organization = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="admin_tokens",
        help_text="Blank: platform-wide (sees every organisation).",
    )
    role = models.CharField(
        max_length=20,
        choices=[(r.value, r.label) for r in TOKEN_ROLES],
        default=Role.ORG_ADMIN,
        help_text="What the token may do, as a person with this role "
        "(platform admin: platform-wide tokens only).",
    )
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.CASCADE,  # as organization: never widen a token by losing its team
        related_name="admin_tokens",
        help_text="Team admin, finance or auditor of this team only (of the token's organisation).",
    )
    prefix = models.CharField(
        max_length=32, editable=False, help_text="First characters, to recognise the token."
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "admin token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def clean(self) -> None:
        """A token's role fits its level: platform admin iff platform-wide; a team only
        for the roles granted at a team, and only a team of the token's organisation."""
        if self.organization_id is None:
            if self.role == Role.ORG_ADMIN and self.team_id is None:
                self.role = Role.PLATFORM_ADMIN  # the default, on a token of no organisation
            if self.role != Role.PLATFORM_ADMIN or self.team_id is not None:
                raise ValidationError(
                    {"role": "A platform-wide token (no organisation) is a platform admin."}
                )
            return
        if self.role == Role.PLATFORM_ADMIN:
            raise ValidationError({"role": "A platform admin token has no organisation."})
        if self.role == Role.TEAM_ADMIN and self.team_id is None:
            raise ValidationError({"team": "A team admin token names its team."})
        if self.team_id is not None:
            if self.role not in TEAM_TOKEN_ROLES:
                raise ValidationError({"team": f"A {self.role} token has no team."})
            if self.team.organization_id != self.organization_id:
                raise ValidationError({"team": "The team is not in the token's organisation."})

    @property
    def is_platform(self) -> bool:
        return self.organization_id is None

    @property
    def level(self) -> str:
        """``org:acme``, ``team:acme/search`` or ``platform`` (as a membership's)."""
        if self.team_id is not None:
            return f"team:{self.team}"
        if self.organization_id is not None:
            return f"org:{self.organization}"
        return "platform"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
