"""Reads of stored responses, scoped to an organisation (and optionally a project), with
expiry applied: an expired row is never returned, purged or not."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from apps.gateway.response_store import StoredResponse as Stored
from apps.gateway.response_store import StoreLimits, chain_broken, chain_too_long
from apps.responses.models import StoredResponse
from apps.tenancy.models import Organization

_FIELDS = (
    "id",
    "organization_id",
    "project_id",
    "key_id",
    "model",
    "previous_response_id",
    "instructions",
    "response_json",
    "input_items_json",
    "metadata_json",
    "created_at",
)


def expired(created_at: datetime, retention_days: int, now: datetime) -> bool:
    """Past its organisation's retention (0: never)."""
    return bool(retention_days) and created_at <= now - timedelta(days=retention_days)


def _stored(row: Mapping[str, Any]) -> Stored:
    return Stored(
        id=row["id"],
        org_id=row["organization_id"],
        key_id=row["key_id"],
        project_id=row["project_id"],
        model=row["model"],
        response=orjson.loads(row["response_json"]),
        input_items=orjson.loads(row["input_items_json"]),
        previous_response_id=row["previous_response_id"],
        created_at=row["created_at"].timestamp(),
        instructions=row["instructions"],
        metadata=orjson.loads(row["metadata_json"]),
    )


def _visible(row: Mapping[str, Any], days: int, project_id: int | None, now: datetime) -> bool:
    """In the caller's project (when it narrows to one) and not expired; the
    organisation is already every query's filter."""
    in_project = project_id is None or row["project_id"] == project_id
    return in_project and not expired(row["created_at"], days, now)


def stored_response_get(
    *, org_id: int, response_id: str, project_id: int | None = None, now: datetime | None = None
) -> Stored | None:
    """One query (the organisation's retention joined)."""
    now = now or datetime.now(UTC)
    row = (
        StoredResponse.objects.filter(pk=response_id, organization_id=org_id)
        .values(*_FIELDS, "organization__response_retention_days")
        .first()
    )
    if row is None:
        return None
    if not _visible(row, row["organization__response_retention_days"], project_id, now):
        return None
    return _stored(row)


@functools.cache
def _chain_sql() -> str:
    table = StoredResponse._meta.db_table
    org = Organization._meta.db_table
    columns = ", ".join(f"r.{name}" for name in _FIELDS)
    # The recursion walks ids and sizes only; bodies are read once the chain is known,
    # and it stops past the turn or byte limit (one row over, to tell "too long").
    # Only table and column names (the models' own) are formatted in; values are params.
    return f"""
        WITH RECURSIVE chain (id, previous_response_id, depth, total) AS (
            SELECT id, previous_response_id, 1, size_bytes
            FROM {table} WHERE id = %s AND organization_id = %s
          UNION ALL
            SELECT r.id, r.previous_response_id, c.depth + 1, c.total + r.size_bytes
            FROM {table} r JOIN chain c ON r.id = c.previous_response_id
            WHERE r.organization_id = %s AND c.depth <= %s AND c.total <= %s
        )
        SELECT {columns}, c.depth AS chain_depth, c.total AS chain_total,
               o.response_retention_days AS retention_days
        FROM chain c
        JOIN {table} r ON r.id = c.id
        JOIN {org} o ON o.id = r.organization_id
        ORDER BY c.depth
    """  # noqa: S608


def stored_response_chain(
    *,
    org_id: int,
    response_id: str,
    limits: StoreLimits,
    project_id: int | None = None,
    now: datetime | None = None,
) -> list[Stored] | None:
    """The conversation ending at ``response_id``, oldest first, in one query (a
    recursive CTE). None when the last response is not visible; refused when an earlier
    one is missing, expired or of another project, or past ``limits``."""
    now = now or datetime.now(UTC)
    params = [response_id, org_id, org_id, limits.max_chain, limits.max_conversation_bytes]
    rows = list(StoredResponse.objects.raw(_chain_sql(), params))
    if not rows:
        return None
    chain: list[Stored] = []
    for index, raw in enumerate(rows):
        row = {name: getattr(raw, name) for name in _FIELDS}
        if not _visible(row, raw.retention_days, project_id, now):
            if index == 0:
                return None
            raise chain_broken(response_id, raw.id)
        chain.append(_stored(row))
    last = rows[-1]
    if len(rows) > limits.max_chain or last.chain_total > limits.max_conversation_bytes:
        raise chain_too_long(response_id, limits)
    if last.previous_response_id is not None:  # not in this organisation (deleted, purged)
        raise chain_broken(response_id, last.previous_response_id)
    chain.reverse()
    return chain
