"""Single sign-on with OpenID Connect, configured per organisation, and the record of every
sign-in (local or SSO, success or failure).

An organisation's :class:`OidcProvider` names its identity provider (discovered from the
issuer URL) and its client credentials; its :class:`GroupMapping` rows turn the groups a
person has at the provider into memberships (a role at the organisation, one of its teams
or one of its projects). A platform admin is never granted by SSO: that stays a local
account (the break-glass superuser) or a manual grant.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from apps.core.fields import EncryptedTextField
from apps.core.secrets import SecretChangeTimes, secret_changed_at_field
from apps.identity.models import ROLE_LEVELS, Role
from apps.tenancy.models import Organization, Project, Team


def parse_domains(text: str) -> list[str]:
    """``"example.com, Example.org"`` → ``["example.com", "example.org"]``."""
    return [d.strip().lower().lstrip("@") for d in text.replace(",", " ").split() if d.strip()]


class OidcProvider(SecretChangeTimes, models.Model):
    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="oidc_provider"
    )
    enabled = models.BooleanField(default=True, help_text="Disabled: nobody signs in through it.")
    issuer = models.URLField(
        max_length=500,
        help_text="The provider's issuer URL; its /.well-known/openid-configuration is read "
        "for the endpoints and signing keys, and must name exactly this issuer.",
    )
    client_id = models.CharField(max_length=255)
    client_secret = EncryptedTextField(
        blank=True, help_text="The client secret the provider gave Odock; encrypted at rest."
    )
    client_secret_changed_at = secret_changed_at_field()
    scopes = models.CharField(
        max_length=255,
        default="openid email profile groups",
        help_text="Scopes asked for, space-separated (must include openid).",
    )
    groups_claim = models.CharField(
        max_length=100, default="groups", help_text="The claim carrying the person's groups."
    )
    username_claim = models.CharField(
        max_length=100,
        default="preferred_username",
        help_text="The claim that becomes the Odock username on first sign-in.",
    )
    email_claim = models.CharField(max_length=100, default="email")
    allowed_email_domains = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Optional, comma-separated: only people whose email is in one of these "
        "domains may sign in. Also lets the login page find the organisation from an email.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "OpenID Connect provider"

    def __str__(self) -> str:
        return f"SSO of {self.organization}"

    @property
    def email_domains(self) -> list[str]:
        return parse_domains(self.allowed_email_domains)

    def clean(self) -> None:
        if "openid" not in self.scopes.split():
            raise ValidationError({"scopes": "The scopes must include openid."})


class GroupMapping(models.Model):
    """One row of the claim mapping: members of ``group`` get ``role`` at a level of the
    provider's organisation (the organisation itself when no team or project is named)."""

    provider = models.ForeignKey(OidcProvider, on_delete=models.CASCADE, related_name="mappings")
    group = models.CharField(max_length=255, help_text="A value of the groups claim, exactly.")
    role = models.CharField(
        max_length=20, choices=[c for c in Role.choices if c[0] != Role.PLATFORM_ADMIN]
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta:
        ordering = ["provider_id", "group", "role"]
        constraints = [
            # One row per group, role and level; one constraint per level shape, as
            # SQLite (the embedded default) ignores ``nulls_distinct``.
            models.UniqueConstraint(
                fields=["provider", "group", "role"],
                condition=models.Q(team__isnull=True, project__isnull=True),
                name="sso_group_mapping_unique_org",
            ),
            models.UniqueConstraint(
                fields=["provider", "group", "role", "team"],
                condition=models.Q(team__isnull=False),
                name="sso_group_mapping_unique_team",
            ),
            models.UniqueConstraint(
                fields=["provider", "group", "role", "project"],
                condition=models.Q(project__isnull=False),
                name="sso_group_mapping_unique_project",
            ),
            models.CheckConstraint(
                condition=models.Q(team__isnull=True) | models.Q(project__isnull=True),
                name="sso_group_mapping_one_level",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group} → {self.role} of {self.level}"

    @property
    def level_name(self) -> str:
        if self.project_id is not None:
            return "project"
        if self.team_id is not None:
            return "team"
        return "organization"

    @property
    def level(self) -> str:
        if self.project_id is not None:
            return f"project:{self.project}"
        if self.team_id is not None:
            return f"team:{self.team}"
        return f"org:{self.provider.organization}" if self.provider_id else "org"

    def clean(self) -> None:
        if self.role == Role.PLATFORM_ADMIN:
            raise ValidationError({"role": "A platform admin is never granted by SSO."})
        if self.team_id is not None and self.project_id is not None:
            raise ValidationError("Name a team or a project, not both.")
        allowed = ROLE_LEVELS.get(self.role, ())
        if self.role and self.level_name not in allowed:
            names = " or ".join(allowed)
            raise ValidationError(f"A {self.role} role is granted at the {names} level.")
        if self.provider_id is None:
            return
        org_id = self.provider.organization_id
        if self.team_id is not None and self.team.organization_id != org_id:
            raise ValidationError({"team": "The team must belong to the provider's organisation."})
        if self.project_id is not None and self.project.team.organization_id != org_id:
            raise ValidationError(
                {"project": "The project must belong to the provider's organisation."}
            )


class SsoIdentity(models.Model):
    """Links a person at a provider (its stable ``sub``) to the Odock user it created.

    Only accounts created by SSO are ever linked: a provider that asserts a username an
    existing local account has (``admin``, say) is refused, never logged in as it."""

    provider = models.ForeignKey(OidcProvider, on_delete=models.CASCADE, related_name="identities")
    subject = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "subject"], name="sso_identity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.provider.issuer}"


class SignInMethod(models.TextChoices):
    LOCAL = "local", "Local password"
    SSO = "sso", "Single sign-on"


class SignInOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


class SignInEvent(models.Model):
    """One sign-in attempt. Never holds a password, a code or a token."""

    at = models.DateTimeField(db_index=True)
    username = models.CharField(max_length=255, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    method = models.CharField(max_length=10, choices=SignInMethod.choices)
    outcome = models.CharField(max_length=10, choices=SignInOutcome.choices)
    reason = models.CharField(max_length=255, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "sign-in"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.method} {self.outcome} {self.username}"
