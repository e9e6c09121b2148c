"""The configuration change trail and compliance evidence packs.

``ConfigChange`` rows are written by signal receivers (``apps.compliance.trail``) for every
governance model: who changed what, when, from where, with each changed field's value
before and after — never a secret's value. References are plain ids, without database
constraints, so the trail outlives the users and objects it names.

An ``EvidencePack`` is one organisation's evidence for one period, built by a Celery task
(``apps.compliance.services.evidence_pack_build``) into files under the default storage.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from apps.tenancy.models import Organization


class ChangeAction(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    DELETE = "delete", "Delete"


class ConfigChange(models.Model):
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(
        max_length=200,
        help_text='Username at the time, "odock_apply", "api token <name>" or "system".',
    )
    actor_user_id = models.BigIntegerField(
        null=True, blank=True, help_text="The user's id when a person made the change."
    )
    actor_role = models.CharField(
        max_length=300,
        blank=True,
        help_text="The role(s) in effect: a person's at the changed object's level "
        '("team_admin of team:acme/search"), a token\'s ("api token ci: finance of '
        'org:acme"), "odock_apply", "portal", a SCIM token\'s.',
    )
    action = models.CharField(max_length=8, choices=ChangeAction.choices)
    object_type = models.CharField(max_length=100, help_text="app_label.model")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    organization_id = models.BigIntegerField(
        null=True, blank=True, help_text="The organisation the object belongs to; blank: platform."
    )
    team_id = models.BigIntegerField(
        null=True, blank=True, help_text="The team the object belongs to, if any."
    )
    project_id = models.BigIntegerField(
        null=True, blank=True, help_text="The project the object belongs to, if any."
    )
    changes = models.JSONField(
        default=dict,
        blank=True,
        help_text='Field → {"before", "after"}; secrets only as "changed".',
    )
    request_id = models.CharField(max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "configuration change"
        indexes = [
            models.Index(fields=["-created_at", "-id"]),
            models.Index(fields=["organization_id", "-created_at"]),
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["actor", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type} {self.object_repr}"


class PackStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class EvidencePack(models.Model):
    # PROTECT: evidence is a record; an organisation with packs is not deleted by accident.
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="evidence_packs"
    )
    period_start = models.DateField(help_text="First day (UTC), included.")
    period_end = models.DateField(help_text="Last day (UTC), included.")
    status = models.CharField(max_length=8, choices=PackStatus.choices, default=PackStatus.QUEUED)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    files = models.JSONField(
        default=list,
        blank=True,
        help_text="Each file: name, storage path, bytes, rows (data files), sha256.",
    )
    summary = models.JSONField(default=dict, blank=True, help_text="The counts the PDF shows.")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "evidence pack"

    def __str__(self) -> str:
        return f"{self.organization.name} {self.period_start}…{self.period_end}"

    def clean(self) -> None:
        if self.period_start and self.period_end and self.period_start > self.period_end:
            raise ValidationError({"period_end": "The period ends before it starts."})

    def file_entry(self, name: str) -> dict | None:
        """The manifest entry of one of the pack's files (downloads go by name only)."""
        return next((f for f in self.files or [] if f.get("name") == name), None)
