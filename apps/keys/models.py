"""Virtual keys: what apps present to the gateway. Only a keyed digest is stored."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.tenancy.models import Project


class VirtualKey(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="keys")
    name = models.SlugField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="virtual_keys",
        help_text="The person this key belongs to, if any.",
    )
    prefix = models.CharField(
        max_length=32, editable=False, help_text="First characters, to recognise the key."
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # Rotation: the previous secret stays valid until previous_valid_until.
    previous_digest = models.CharField(
        max_length=64, null=True, blank=True, unique=True, editable=False
    )
    previous_valid_until = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Suspended (e.g. its owner deprovisioned by SCIM): refused like a revoked key, but
    # resuming it restores it with the same secret.
    suspended_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="key_unique_in_project")
        ]
        verbose_name = "virtual key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
