"""Writes of stored responses: save (capped), delete (hard), and the retention purge."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import orjson

from apps.gateway.response_store import StoredResponse as Stored
from apps.gateway.response_store import stored_too_large
from apps.responses.models import StoredResponse
from apps.responses.selectors import expired
from apps.tenancy.models import Organization

log = logging.getLogger(__name__)

PURGE_BATCH = 5000


def stored_response_save(*, stored: Stored, max_bytes: int) -> StoredResponse:
    """Keep ``stored``; refused (``ResponseStoreRefused``) past ``max_bytes`` of JSON.

    One INSERT: ``clean_fields`` checks the columns without a query (``full_clean`` would
    also look the organisation and the id up, two more round trips on the request path;
    the foreign key and the primary key are checked by the database itself)."""
    response = orjson.dumps(stored.response)
    items = orjson.dumps(stored.input_items)
    metadata = orjson.dumps(stored.metadata)
    size = len(response) + len(items) + len(metadata) + len((stored.instructions or "").encode())
    if size > max_bytes:
        raise stored_too_large(size, max_bytes)
    row = StoredResponse(
        id=stored.id,
        organization_id=stored.org_id,
        project_id=stored.project_id,
        key_id=stored.key_id,
        model=stored.model,
        previous_response_id=stored.previous_response_id,
        instructions=stored.instructions,
        response_json=response.decode(),
        input_items_json=items.decode(),
        metadata_json=metadata.decode(),
        size_bytes=size,
        created_at=datetime.fromtimestamp(stored.created_at, UTC),
    )
    row.clean_fields(exclude=["organization"])
    row.save(force_insert=True)
    return row


def stored_response_delete(
    *, org_id: int, response_id: str, project_id: int | None = None, now: datetime | None = None
) -> bool:
    """Remove a visible stored response for good; False when there was none in scope
    (missing, expired, another organisation's or project's — the same answer)."""
    now = now or datetime.now(UTC)
    row = (
        StoredResponse.objects.filter(pk=response_id, organization_id=org_id)
        .values_list("project_id", "created_at", "organization__response_retention_days")
        .first()
    )
    if row is None:
        return False
    row_project, created_at, days = row
    if (project_id is not None and row_project != project_id) or expired(created_at, days, now):
        return False
    deleted, _ = StoredResponse.objects.filter(pk=response_id, organization_id=org_id).delete()
    return deleted > 0


def stored_response_purge(*, now: datetime | None = None, batch: int = PURGE_BATCH) -> int:
    """Delete every stored response past its organisation's retention, in batches (short
    transactions: the gateway keeps saving meanwhile). Idempotent; returns the count."""
    now = now or datetime.now(UTC)
    removed = 0
    for org_id, days in Organization.objects.filter(response_retention_days__gt=0).values_list(
        "id", "response_retention_days"
    ):
        old = StoredResponse.objects.filter(
            organization_id=org_id, created_at__lte=now - timedelta(days=days)
        )
        while ids := list(old.values_list("pk", flat=True)[:batch]):
            deleted, _ = StoredResponse.objects.filter(pk__in=ids).delete()
            removed += deleted
    return removed
