"""Admin tokens: what callers of the management API present. Only a keyed digest is stored."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.tenancy.models import Organization

ADMIN_TOKEN_PREFIX = "odk-admin-"  # noqa: S105 - the public start of every token


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

    @property
    def is_platform(self) -> bool:
        return self.organization_id is None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
