"""SCIM 2.0 provisioning, one organisation at a time.

An identity provider provisions into one organisation with that organisation's token, and
everything it creates is that organisation's: a SCIM *User* is a :class:`ScimIdentity`
(the link between the organisation and a login account), not the account itself, so the
same person provisioned by two organisations is two SCIM resources with two ids, and
neither organisation's token can see, change or deprovision the other's. A SCIM *Group*
is a :class:`ScimGroup`; an administrator maps it to a role at a level of the
organisation, and its members then hold that role (memberships with source ``scim``).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from apps.identity.models import ROLE_LEVELS, Role
from apps.tenancy.models import Organization, Project, Team

SCIM_TOKEN_PREFIX = "odk-scim-"  # noqa: S105 - the public start of every SCIM token


def _new_scim_id() -> str:
    return str(uuid.uuid4())


class DeprovisionPolicy(models.TextChoices):
    SUSPEND = "suspend", "Suspend their keys (reactivation restores them)"
    REVOKE = "revoke", "Revoke their keys (for good)"


class ScimSettings(models.Model):
    """An organisation's SCIM policy. Without a row the defaults apply (suspend)."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="scim_settings"
    )
    on_deprovision = models.CharField(
        max_length=10,
        choices=DeprovisionPolicy.choices,
        default=DeprovisionPolicy.SUSPEND,
        help_text="What happens to a person's keys in this organisation when the identity "
        "provider deactivates or deletes them.",
    )

    class Meta:
        verbose_name = "SCIM settings"
        verbose_name_plural = "SCIM settings"

    def __str__(self) -> str:
        return f"SCIM settings of {self.organization}"


class ScimToken(models.Model):
    """What an identity provider presents. Only a keyed digest is stored."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="scim_tokens"
    )
    name = models.CharField(max_length=100, help_text="Which identity provider uses it.")
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
        verbose_name = "SCIM token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def actor_name(self) -> str:
        """How the change trail names changes made with this token."""
        return f"scim token {self.name} ({self.organization.name})"


class ScimIdentity(models.Model):
    """A SCIM User: a login account as one organisation's identity provider knows it.

    The attributes are the provider's view, kept per organisation; the account's own name
    and e-mail are set only when SCIM created the account, so one organisation cannot
    rename a person another organisation also knows.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="scim_identities"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scim_identities"
    )
    scim_id = models.CharField(max_length=36, unique=True, default=_new_scim_id, editable=False)
    external_id = models.CharField(max_length=254, blank=True)
    user_name = models.CharField(max_length=150)
    given_name = models.CharField(max_length=150, blank=True)
    family_name = models.CharField(max_length=150, blank=True)
    formatted_name = models.CharField(max_length=254, blank=True)
    display_name = models.CharField(max_length=254, blank=True)
    email = models.EmailField(max_length=254, blank=True)
    email_type = models.CharField(max_length=20, blank=True, help_text="work, home, other…")
    email_primary = models.BooleanField(default=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization_id", "user_name"]
        verbose_name = "SCIM identity"
        verbose_name_plural = "SCIM identities"
        constraints = [
            # userName is case-insensitive in SCIM (RFC 7643 §4.1.1).
            models.UniqueConstraint(
                "organization", Lower("user_name"), name="scim_identity_username_unique"
            ),
            models.UniqueConstraint(
                fields=["organization", "user"], name="scim_identity_user_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_name} in {self.organization}"


class ScimGroup(models.Model):
    """A SCIM Group, and the role its members hold: ``role`` at the organisation, or at
    ``team`` / ``project`` of it. Without a role the group grants nothing."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="scim_groups"
    )
    scim_id = models.CharField(max_length=36, unique=True, default=_new_scim_id, editable=False)
    external_id = models.CharField(max_length=254, blank=True)
    display_name = models.CharField(max_length=254)
    members = models.ManyToManyField(ScimIdentity, blank=True, related_name="groups")
    role = models.CharField(
        max_length=20,
        blank=True,
        choices=[(r.value, r.label) for r in Role if r != Role.PLATFORM_ADMIN],
        help_text="The role the group's members hold. Blank: the group grants nothing.",
    )
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Grant the role at this team (blank: at the organisation).",
    )
    project = models.ForeignKey(
        Project,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Grant the role at this project (blank: at the team or organisation).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization_id", "display_name"]
        verbose_name = "SCIM group"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(team__isnull=True) | models.Q(project__isnull=True),
                name="scim_group_one_level",
            )
        ]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.organization})"

    @property
    def level_name(self) -> str:
        if self.project_id is not None:
            return "project"
        if self.team_id is not None:
            return "team"
        return "organization"

    def grant(self) -> tuple[str, int | None, int | None, int | None] | None:
        """``(role, organization_id, team_id, project_id)`` of the membership the group
        gives, or None for an unmapped group."""
        if not self.role:
            return None
        if self.project_id is not None:
            return (self.role, None, None, self.project_id)
        if self.team_id is not None:
            return (self.role, None, self.team_id, None)
        return (self.role, self.organization_id, None, None)

    def clean(self) -> None:
        if self.team_id is not None and self.project_id is not None:
            raise ValidationError("Choose a team or a project, not both.")
        if self.team_id is not None and self.team.organization_id != self.organization_id:
            raise ValidationError({"team": "The team must belong to the group's organisation."})
        if self.project_id is not None and (
            self.project.team.organization_id != self.organization_id
        ):
            raise ValidationError(
                {"project": "The project must belong to the group's organisation."}
            )
        if self.role:
            allowed = ROLE_LEVELS.get(self.role, ())
            if self.level_name not in allowed:
                raise ValidationError(
                    f"A {self.role} role is granted at the {' or '.join(allowed)} level, "
                    f"not at a {self.level_name}."
                )
