"""Stored Responses (``POST /v1/responses`` with ``store: true``), as the hot path sees them.

The gateway, not the provider, keeps a stored response: a conversation continued with
``previous_response_id`` may go to any provider, from any gateway process. What is kept
is exactly what the client sent (this turn's input items) and got (the response object).

Scope. Every lookup is scoped to the key's organisation (the tenant boundary, enforced in
every query): another organisation's id finds nothing, exactly like a missing one. Callers
may narrow it to the key's *project* (``project_id=``): the gateway's own endpoints (GET,
DELETE, input_items, cancel) do, because a stored response holds an application's prompts
and answers, the project is the unit that owns an application's keys (a rotated key keeps
its project), and OpenAI scopes stored responses to a project too.

Chains. ``chain()`` returns the responses of a conversation, oldest first, and refuses
(``ResponseStoreRefused``, a 400 naming ``previous_response_id``) rather than silently
continuing with turns missing: when an earlier response was deleted or has expired, or
when the chain is longer than ``StoreLimits.max_chain`` turns or larger than
``max_conversation_bytes``.

Failures are ``GatewayError`` subclasses, so a stage that lets one through answers it
right: ``ResponseStoreUnavailable`` (503 ``store_unavailable``, retry) when the store did not
answer within its bound — the policy is to refuse rather than to answer without the
conversation or to hang — and ``ResponseStoreRefused`` (400) for what will never work.

This module is the contract and an in-memory store for tests; the database store
(PostgreSQL, or SQLite on the embedded default) is ``apps.responses.store``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from apps.gateway.errors import GatewayError


class ResponseStoreError(GatewayError):
    """The store could not do what was asked; the error is the answer to send."""


class ResponseStoreUnavailable(ResponseStoreError):
    """The store did not answer in time (or at all): the request fails with a 503."""

    def __init__(
        self, message: str = "Stored responses cannot be reached right now; retry shortly."
    ) -> None:
        super().__init__(
            503,
            message,
            code="store_unavailable",
            type="api_error",
            headers=[(b"retry-after", b"2")],
        )


class ResponseStoreRefused(ResponseStoreError):
    """What the store will never do for this request (too large, chain broken): a 400."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(400, message, code=code, param=param)


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


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bounds on what is kept and loaded, so no request can make the store (or the
    process loading a conversation) hold an unbounded amount."""

    # One stored response: its JSON (response, input items, instructions, metadata).
    max_stored_bytes: int = 16 * 1024 * 1024
    # A conversation loaded for a continuation or input_items: turns, and their bytes.
    max_chain: int = 1000
    max_conversation_bytes: int = 64 * 1024 * 1024


def stored_size(stored: StoredResponse) -> int:
    """The bytes a stored response takes as JSON (what ``max_stored_bytes`` bounds)."""
    return (
        len(orjson.dumps(stored.response))
        + len(orjson.dumps(stored.input_items))
        + len((stored.instructions or "").encode())
        + len(orjson.dumps(stored.metadata))
    )


def response_not_found(response_id: str, *, param: str | None = None) -> GatewayError:
    """The one 404 for a response that is missing, expired, deleted or another
    organisation's (or project's): an answer never tells which."""
    return GatewayError(
        404,
        f"Response with id '{response_id[:200]}' not found.",
        code="not_found",
        param=param,
    )


def stored_too_large(size: int, limit: int) -> ResponseStoreRefused:
    return ResponseStoreRefused(
        f"The response is too large to store ({size} bytes; the limit is {limit}). "
        "Send it again with store: false.",
        code="stored_response_too_large",
        param="store",
    )


def chain_broken(head: str, missing: str) -> ResponseStoreRefused:
    """An earlier turn is gone: continuing without it would change the conversation."""
    return ResponseStoreRefused(
        f"The conversation ending at response '{head}' cannot be used: an earlier response "
        f"in it ('{missing}') was deleted or has expired.",
        code="previous_response_not_found",
        param="previous_response_id",
    )


def chain_too_long(head: str, limits: StoreLimits) -> ResponseStoreRefused:
    return ResponseStoreRefused(
        f"The conversation ending at response '{head}' is longer than the "
        f"{limits.max_chain} turns or {limits.max_conversation_bytes} bytes this gateway "
        "continues; start a new one, or send the items you need as input.",
        code="conversation_too_long",
        param="previous_response_id",
    )


def conversation_items(chain: list[StoredResponse]) -> list[dict[str, Any]]:
    """A chain's items, oldest first: each turn's input items, then its output items."""
    items: list[dict[str, Any]] = []
    for row in chain:
        items.extend(row.input_items)
        items.extend(row.response.get("output") or [])
    return items


def input_items_of(chain: list[StoredResponse]) -> list[dict[str, Any]]:
    """Every item the last response of ``chain`` was generated from, oldest first: the
    earlier turns' inputs and outputs, then its own input (what OpenAI's
    ``GET /v1/responses/{id}/input_items`` lists)."""
    return conversation_items(chain[:-1]) + list(chain[-1].input_items)


class ResponseStore(Protocol):
    async def load(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> StoredResponse | None:
        """The stored response, or None when it does not exist, has expired, was deleted
        or belongs to another organisation (or, given ``project_id``, another project):
        indistinguishable to the caller."""
        ...

    async def chain(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> list[StoredResponse] | None:
        """The responses of the conversation ending at ``response_id``, oldest first.
        None as for :meth:`load` (the last one); ``ResponseStoreRefused`` when an earlier
        one is missing or the chain is past the limits."""
        ...

    async def conversation(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> list[dict[str, Any]] | None:
        """The items of the whole chain ending at ``response_id``, oldest first: each
        turn's input items, then its output items. None and refusals as for :meth:`chain`."""
        ...

    async def save(self, stored: StoredResponse) -> None:
        """Keep ``stored``; ``ResponseStoreRefused`` when it is past ``max_stored_bytes``."""
        ...

    async def delete(self, org_id: int, response_id: str, *, project_id: int | None = None) -> bool:
        """True when it existed (in this scope, unexpired) and is now gone."""
        ...


class ChainConversation:
    """``conversation`` for a store that has ``chain`` (one definition for every store)."""

    async def chain(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> list[StoredResponse] | None:
        raise NotImplementedError

    async def conversation(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> list[dict[str, Any]] | None:
        chain = await self.chain(org_id, response_id, project_id=project_id)
        return None if chain is None else conversation_items(chain)


def _in_scope(row: StoredResponse | None, org_id: int, project_id: int | None) -> bool:
    return (
        row is not None
        and row.org_id == org_id
        and (project_id is None or row.project_id == project_id)
    )


class MemoryResponseStore(ChainConversation):
    """A process-local store: for tests and for a gateway built without a database. It
    applies the same scope and limits as the database store; it has no retention."""

    def __init__(self, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self._rows: dict[str, StoredResponse] = {}

    async def load(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> StoredResponse | None:
        row = self._rows.get(response_id)
        return row if _in_scope(row, org_id, project_id) else None

    async def chain(
        self, org_id: int, response_id: str, *, project_id: int | None = None
    ) -> list[StoredResponse] | None:
        head = await self.load(org_id, response_id, project_id=project_id)
        if head is None:
            return None
        chain = [head]
        size = stored_size(head)
        while True:
            if len(chain) > self.limits.max_chain or size > self.limits.max_conversation_bytes:
                raise chain_too_long(response_id, self.limits)
            missing = chain[-1].previous_response_id
            if missing is None:
                break
            row = await self.load(org_id, missing, project_id=project_id)
            if row is None:
                raise chain_broken(response_id, missing)
            size += stored_size(row)
            chain.append(row)
        chain.reverse()
        return chain

    async def save(self, stored: StoredResponse) -> None:
        size = stored_size(stored)
        if size > self.limits.max_stored_bytes:
            raise stored_too_large(size, self.limits.max_stored_bytes)
        self._rows[stored.id] = stored

    async def delete(self, org_id: int, response_id: str, *, project_id: int | None = None) -> bool:
        if await self.load(org_id, response_id, project_id=project_id) is None:
            return False
        del self._rows[response_id]
        return True
