"""The request log: one row per proxied request, allowed or refused.

References to the hierarchy are kept without database constraints so that records
outlive the keys and teams they name (an audit log must not cascade-delete).
"""

from __future__ import annotations

from django.db import models


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
    endpoint = models.CharField(max_length=64)
    model_requested = models.CharField(max_length=200, blank=True)
    deployment = models.CharField(max_length=300, blank=True, help_text="provider:upstream_model")
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=12, default=0)
    latency_ms = models.FloatField(default=0)
    upstream_ms = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField("time to first token (ms)", null=True, blank=True)
    client_disconnected = models.BooleanField(default=False)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    decisions = models.JSONField(default=list, help_text="Each stage's decision and reason.")
    attempts = models.JSONField(
        default=list, help_text="Each upstream attempt: deployment, status, error code, ms."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["team", "-created_at"]),
            models.Index(fields=["project", "-created_at"]),
            models.Index(fields=["key", "-created_at"]),
            models.Index(fields=["status_code", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.endpoint} {self.status_code}"
