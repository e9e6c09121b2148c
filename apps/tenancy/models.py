"""The organisation hierarchy: Organization → Team → Project (keys live in apps.keys)."""

from __future__ import annotations

from django.db import models

from apps.core.fields import EncryptedTextField
from apps.core.secrets import SecretChangeTimes, secret_changed_at_field
from apps.core.validators import validate_upstream_url


class OutagePolicy(models.TextChoices):
    FAIL_CLOSED = "fail_closed", "Fail closed: refuse with 503"
    FAIL_OPEN = "fail_open", "Fail open: local best-effort limits, incident recorded"


class Organization(SecretChangeTimes, models.Model):
    name = models.SlugField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True, help_text="Inactive: every key below is refused.")
    outage_policy = models.CharField(
        max_length=16,
        choices=OutagePolicy.choices,
        default=OutagePolicy.FAIL_CLOSED,
        help_text="What the gateway does when Redis (shared limits) or the database is away.",
    )
    alert_webhook_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_upstream_url],
        help_text="Budget alerts are POSTed here (http or https), signed (HMAC).",
    )
    alert_webhook_secret = EncryptedTextField(
        blank=True, help_text="HMAC-SHA256 key for X-Odock-Signature; encrypted at rest."
    )
    alert_webhook_secret_changed_at = secret_changed_at_field()
    alert_emails = models.CharField(
        max_length=1000, blank=True, help_text="Comma-separated addresses for budget alerts."
    )
    audit_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Audit records older than this are purged, by whole sealed segments. "
        "Blank: kept forever.",
    )
    response_retention_days = models.PositiveIntegerField(
        default=30,
        help_text="Stored responses (POST /v1/responses with store) older than this are never "
        "returned again and are purged within the hour; applies to those already stored. "
        "0: kept until deleted.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Team(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="teams")
    name = models.SlugField(max_length=100)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="team_unique_in_org")
        ]

    def __str__(self) -> str:
        return f"{self.organization.name}/{self.name}"


class Project(models.Model):
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="projects")
    name = models.SlugField(max_length=100)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team__organization__name", "team__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="project_unique_in_team")
        ]

    def __str__(self) -> str:
        return f"{self.team.organization.name}/{self.team.name}/{self.name}"

    @property
    def organization(self) -> Organization:
        return self.team.organization
