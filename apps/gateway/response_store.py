"""Stored Responses (``POST /v1/responses`` with ``store: true``), as the hot path sees them.

The gateway, not the provider, keeps a stored response: a conversation continued with
``previous_response_id`` may go to any provider, from any gateway process. What is kept
is exactly what the client sent (this turn's input items) and got (the response object),
scoped to the key's organisation: a lookup with another organisation's id finds nothing.

This module is the contract and an in-memory store for tests; the database store
(PostgreSQL, or SQLite on the embedded default) is ``apps.responses.store``.
Every method is bounded by the store itself: a stalled database raises
``ResponseStoreUnavailable`` instead of hanging the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ResponseStoreUnavailable(Exception):
    """The store did not answer in time (or at all): the request fails with a 503."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str  # "resp_…", the id the client saw
    org_id: int
    key_id: int
    project_id: int
    model: str  # the public model name the client asked for
    response: dict[str, Any]  # the Response object as sent to the client (final state)
    input_items: list[dict[str, Any]]  # this turn's input, as items with ids
    previous_response_id: str | None
    created_at: float  # epoch seconds (UTC)
    # The instructions of this turn: not carried into a continuation (OpenAI's rule).
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class ResponseStore(Protocol):
    async def load(self, org_id: int, response_id: str) -> StoredResponse | None:
        """The stored response, or None when it does not exist, has expired, was deleted
        or belongs to another organisation (indistinguishable to the caller)."""
        ...

    async def conversation(self, org_id: int, response_id: str) -> list[dict[str, Any]] | None:
        """The items of the whole chain ending at ``response_id``, oldest first: each
        turn's input items, then its output items. None as for :meth:`load`."""
        ...

    async def save(self, stored: StoredResponse) -> None: ...

    async def delete(self, org_id: int, response_id: str) -> bool:
        """True when it existed (in this organisation) and is now gone."""
        ...


class MemoryResponseStore:
    """A process-local store: for tests and for a gateway built without a database."""

    def __init__(self) -> None:
        self._rows: dict[str, StoredResponse] = {}

    async def load(self, org_id: int, response_id: str) -> StoredResponse | None:
        row = self._rows.get(response_id)
        return row if row is not None and row.org_id == org_id else None

    async def conversation(self, org_id: int, response_id: str) -> list[dict[str, Any]] | None:
        chain: list[StoredResponse] = []
        next_id: str | None = response_id
        while next_id is not None:
            row = await self.load(org_id, next_id)
            if row is None:
                return None
            chain.append(row)
            next_id = row.previous_response_id
        items: list[dict[str, Any]] = []
        for row in reversed(chain):
            items.extend(row.input_items)
            items.extend(row.response.get("output") or [])
        return items

    async def save(self, stored: StoredResponse) -> None:
        self._rows[stored.id] = stored

    async def delete(self, org_id: int, response_id: str) -> bool:
        row = await self.load(org_id, response_id)
        if row is None:
            return False
        del self._rows[response_id]
        return True
