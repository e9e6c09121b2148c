"""Celery tasks of stored responses: each wraps one service and is named after it."""

from __future__ import annotations

import logging

from celery import shared_task

from apps.policies.rollup import cluster_lock
from apps.responses.services import stored_response_purge

log = logging.getLogger(__name__)

PURGE_TIME_LIMIT = 3000


@shared_task(
    name="responses.stored_response_purge",
    soft_time_limit=PURGE_TIME_LIMIT - 60,
    time_limit=PURGE_TIME_LIMIT,
)
def stored_response_purge_task() -> int:
    """Hourly; one worker at a time across the cluster (reads never return an expired
    response anyway: the purge only reclaims the space)."""
    with cluster_lock("responses-retention", PURGE_TIME_LIMIT) as acquired:
        if not acquired:
            return 0
        removed = stored_response_purge()
        log.info("stored responses: %d past retention purged", removed)
        return removed
