"""Celery tasks of the compliance domain: each wraps one service and is named after it.
Routed to the "reports" queue (odock/celery.py) so a long build never delays alerts."""

from __future__ import annotations

from celery import shared_task

from apps.compliance import services


@shared_task(
    name="compliance.evidence_pack_build",
    soft_time_limit=services.BUILD_TIME_LIMIT - 30,
    time_limit=services.BUILD_TIME_LIMIT,
)
def evidence_pack_build(pack_id: int) -> str | None:
    """The pack's final status, or None when another delivery of the task has it."""
    pack = services.evidence_pack_build(pack_id=pack_id)
    return None if pack is None else pack.status
