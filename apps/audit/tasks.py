"""Celery tasks of the audit domain: each wraps one service and is named after it."""

from __future__ import annotations

import logging

from celery import shared_task

from apps.audit.retention import audit_retention_purge
from apps.policies.rollup import cluster_lock

log = logging.getLogger(__name__)

RETENTION_TIME_LIMIT = 3600


@shared_task(
    name="audit.retention_purge",
    soft_time_limit=RETENTION_TIME_LIMIT - 60,
    time_limit=RETENTION_TIME_LIMIT,
)
def retention_purge() -> int:
    """Daily; one worker at a time across the cluster."""
    with cluster_lock("audit-retention", RETENTION_TIME_LIMIT) as acquired:
        if not acquired:
            return 0
        purges = audit_retention_purge()
        removed = sum(p.records for p in purges)
        log.info("audit retention: %d records in %d organisations purged", removed, len(purges))
        return removed
