"""Housekeeping of the change log."""

from __future__ import annotations

from celery import shared_task

from apps.configlog.services import config_log_prune


@shared_task(name="configlog.prune")
def config_log_prune_task() -> int:
    """Daily: the log only has to cover the longest a process can lag behind."""
    return config_log_prune()
