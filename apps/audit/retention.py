"""Retention: remove audit records past their organisation's retention period, by whole
sealed segments, keeping each segment's signed checkpoint so the chain still verifies.

Only this job may delete audit rows: it sets ``odock.audit_retention`` for its own
transaction, which the PostgreSQL trigger checks. Each run leaves an ``AuditPurge`` row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min

from apps.audit.models import AuditCheckpoint, AuditPurge, RequestLog
from apps.tenancy.models import Organization


def _retention_days() -> dict[int | None, int]:
    """Organisation id (None: records of no organisation) → days; 0 or absent: forever."""
    default = settings.ODOCK_AUDIT_DEFAULT_RETENTION_DAYS
    days: dict[int | None, int] = {None: default}
    for org_id, org_days in Organization.objects.values_list("id", "audit_retention_days"):
        days[org_id] = org_days if org_days is not None else default
    return days


def audit_retention_purge(*, now: datetime | None = None) -> list[AuditPurge]:
    """Purge every sealed segment whose newest record is older than its organisation's
    retention. A segment still partly inside the period is kept whole."""
    now = now or datetime.now(UTC)
    purges = []
    for org_id, days in _retention_days().items():
        if not days:
            continue
        cutoff = now - timedelta(days=days)
        segments = AuditCheckpoint.objects.filter(
            organization_id=org_id, purged_at__isnull=True, last_at__lt=cutoff
        ).order_by("chain", "first_seq")
        if not segments.exists():
            continue
        removed = 0
        count = 0
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL odock.audit_retention = 'on'")
            for segment in segments.select_for_update():
                deleted, _ = RequestLog.objects.filter(
                    chain=segment.chain, seq__gte=segment.first_seq, seq__lte=segment.last_seq
                ).delete()
                removed += deleted
                count += 1
            segments.update(purged_at=now)
            oldest = RequestLog.objects.filter(organization_id=org_id).aggregate(
                oldest=Min("created_at")
            )["oldest"]
            purges.append(
                AuditPurge.objects.create(
                    ran_at=now,
                    organization_id=org_id,
                    retention_days=days,
                    segments=count,
                    records=removed,
                    oldest_kept=oldest,
                )
            )
    return purges
