"""The audit log: one row per request, allowed or refused, in tamper-evident hash chains.

References to the hierarchy are kept without database constraints so that records
outlive the keys and teams they name (an audit log must not cascade-delete).

Each record belongs to a chain — one per writer process and organisation — and carries
its sequence number there, the previous record's hash and its own (``apps.audit.chain``).
Writers seal their chains periodically into signed ``AuditCheckpoint`` rows; retention
removes whole sealed segments and keeps their checkpoints. In PostgreSQL a trigger
refuses UPDATE and DELETE on records except inside the retention job.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from apps.policies.models import ScopedRule, _exactly_one_level


def _ref(to: str) -> models.ForeignKey:
    return models.ForeignKey(
        to,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )


class RequestLog(models.Model):
    request_id = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(db_index=True)
    organization = _ref("tenancy.Organization")
    team = _ref("tenancy.Team")
    project = _ref("tenancy.Project")
    key = _ref("keys.VirtualKey")
    key_prefix = models.CharField(max_length=32, blank=True)
    user = _ref(settings.AUTH_USER_MODEL)  # the key's owner, when it has one
    end_user = models.CharField(
        "end user",
        max_length=128,
        blank=True,
        default="",
        db_default="",  # rows inserted by plain SQL (imports, tools) name no end user
        help_text="The application's end customer (x-odock-end-user or the body's user field).",
    )
    endpoint = models.CharField(max_length=64)
    model_requested = models.CharField(max_length=200, blank=True)
    model_served = models.CharField(
        max_length=200, blank=True, help_text="Differs from the model asked for after a fallback."
    )
    provider = models.CharField(max_length=100, blank=True)
    deployment = models.CharField(max_length=300, blank=True, help_text="provider:upstream_model")
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0, help_text="Of the input tokens.")
    usage_estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=12, default=0)
    latency_ms = models.FloatField(default=0)
    upstream_ms = models.FloatField(null=True, blank=True)
    overhead_ms = models.FloatField(
        "gateway overhead (ms)", null=True, blank=True, help_text="Total minus upstream time."
    )
    ttft_ms = models.FloatField("time to first token (ms)", null=True, blank=True)
    client_disconnected = models.BooleanField(default=False)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    decisions = models.JSONField(default=list, help_text="Each stage's decision and reason.")
    attempts = models.JSONField(
        default=list, help_text="Each upstream attempt: deployment, status, error code, ms."
    )
    findings = models.JSONField(
        default=list,
        blank=True,
        help_text="Guardrail findings: detector, action, stage — never the matched text.",
    )
    finding_types = models.CharField(
        max_length=300,
        blank=True,
        help_text="The findings' detectors, comma-separated, for filters.",
    )
    content = models.JSONField(
        null=True, blank=True, help_text="Prompt and response, as the capture policy allows."
    )
    # The hash chain (``apps.audit.chain``). Rows written by anything but the audit writer
    # have no chain and ``audit_verify`` reports them.
    chain = models.CharField(max_length=80, blank=True, default="")
    seq = models.BigIntegerField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["team", "-created_at"]),
            models.Index(fields=["project", "-created_at"]),
            models.Index(fields=["key", "-created_at"]),
            models.Index(fields=["status_code", "-created_at"]),
            models.Index(fields=["model_requested", "-created_at"]),
            models.Index(fields=["-created_at", "-id"]),  # keyset pagination
            models.Index(fields=["provider", "-created_at"]),
            models.Index(fields=["user", "-created_at"]),
            # Most traffic names no end user: only the records that do are indexed.
            models.Index(
                fields=["end_user", "-created_at"],
                condition=~models.Q(end_user=""),
                name="requestlog_end_user_idx",
            ),
            models.Index(
                fields=["error_code", "-created_at"],
                condition=~models.Q(error_code=""),
                name="requestlog_error_code_idx",
            ),
            # Records with guardrail findings are few: a detector filter scans only those.
            models.Index(
                fields=["-created_at"],
                condition=~models.Q(finding_types=""),
                name="requestlog_findings_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["chain", "seq"], name="requestlog_chain_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.endpoint} {self.status_code}"


class AuditCheckpoint(models.Model):
    """A sealed segment of one chain: its last record's hash, signed (Ed25519).

    Kept when retention removes the segment's records, so the chain still verifies."""

    chain = models.CharField(max_length=80)
    organization_id = models.BigIntegerField(null=True, blank=True)
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    first_prev_hash = models.CharField(max_length=64)
    last_hash = models.CharField(max_length=64)
    records = models.PositiveIntegerField()
    first_at = models.DateTimeField()
    last_at = models.DateTimeField(db_index=True)
    sealed_at = models.DateTimeField()
    signature = models.CharField(max_length=200)
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["chain", "first_seq"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "first_seq"], name="checkpoint_chain_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.chain} {self.first_seq}–{self.last_seq}"


class AuditPurge(models.Model):
    """What a retention run removed: the audit trail of the audit trail."""

    ran_at = models.DateTimeField()
    organization_id = models.BigIntegerField(null=True, blank=True)
    retention_days = models.PositiveIntegerField()
    segments = models.PositiveIntegerField()
    records = models.PositiveBigIntegerField()
    oldest_kept = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-ran_at"]

    def __str__(self) -> str:
        return f"{self.ran_at:%Y-%m-%d %H:%M} org {self.organization_id}: {self.records} records"


class CaptureMode(models.TextChoices):
    NONE = "none", "None (metadata only)"
    REDACTED = "redacted", "Redacted (guardrail redactions applied)"
    FULL = "full", "Full"


class ContentCapture(ScopedRule):
    """How much of the prompt and response the audit record keeps. The most specific level
    with a rule decides (a key's rule over its project's, …); no rule anywhere: none."""

    mode = models.CharField(max_length=16, choices=CaptureMode.choices, default=CaptureMode.NONE)
    max_bytes = models.PositiveIntegerField(
        default=16_384,
        validators=[MinValueValidator(256), MaxValueValidator(1_048_576)],
        help_text="Prompt and response are each cut to this many bytes.",
    )

    class Meta:
        verbose_name = "content capture rule"
        constraints = [_exactly_one_level("contentcapture_exactly_one_level")]

    def __str__(self) -> str:
        return f"{self.level} captures {self.mode}"
