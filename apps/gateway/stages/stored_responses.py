"""Stored responses' own endpoints, answered from the response store (no upstream):

    GET    /v1/responses/{id}               the Response object as it was answered
    DELETE /v1/responses/{id}               {"id", "object": "response", "deleted": true}
    GET    /v1/responses/{id}/input_items   a cursor page of the items it was generated from
    POST   /v1/responses/{id}/cancel        only background responses (400 otherwise)

Each runs after ``authenticate``, and is scoped to the key's organisation *and project*
(see ``apps.gateway.response_store``): another organisation's or project's id answers
the same 404 ``not_found`` as a missing one, and nothing changes. A key's model access
does not apply: reading back a stored answer calls no model. A store that does not answer
in time is a 503 ``store_unavailable`` (``ResponseStoreUnavailable``).

Query parameters are honoured or refused by name, never ignored:
- ``include`` (both endpoints): the stored items are kept as the client sent them, so the
  values about input images (``message.input_image.image_url``,
  ``computer_call_output.output.image_url``) are always satisfied; the others ask for
  output detail fixed when the response was created, and are refused.
- ``stream=true`` / ``starting_after`` on retrieve (replaying a stream) are refused;
  ``include_obfuscation`` only concerns streams and is accepted.
- ``input_items``: ``limit`` 1–100 (default 20), ``order`` ``asc``|``desc`` (default
  ``desc``), ``after`` an item id of the list (an unknown one is a 400, not an empty page).
  The items are every item the response was generated from, oldest first before
  ordering: the earlier turns' inputs and outputs (its ``previous_response_id`` chain),
  then its own input. An empty page has ``first_id``/``last_id`` null.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson

from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError, bad_request
from apps.gateway.respond import send_json
from apps.gateway.response_store import (
    ResponseStore,
    StoredResponse,
    input_items_of,
    response_not_found,
)

T = TypeVar("T")

RESPONSES_PREFIX = "/v1/responses/"
RESPONSE_PATH = RESPONSES_PREFIX + "{id}"
INPUT_ITEMS_PATH = RESPONSE_PATH + "/input_items"
CANCEL_PATH = RESPONSE_PATH + "/cancel"
_SUFFIXES = {"": RESPONSE_PATH, "/input_items": INPUT_ITEMS_PATH, "/cancel": CANCEL_PATH}
# Ids the gateway hands out; anything else cannot exist (and is not looked up).
_ID = re.compile(r"resp_[A-Za-z0-9_-]{1,120}")

INCLUDE_VALUES = frozenset(
    {
        "code_interpreter_call.outputs",
        "computer_call_output.output.image_url",
        "file_search_call.results",
        "message.input_image.image_url",
        "message.output_text.logprobs",
        "reasoning.encrypted_content",
        "web_search_call.action.sources",
        "web_search_call.results",
    }
)
INCLUDE_KEPT = frozenset({"message.input_image.image_url", "computer_call_output.output.image_url"})


def stored_response_path(path: str) -> str:
    """``/v1/responses/{id}[/input_items|/cancel]`` → its route template (the pipelines'
    key); any other path as it is (served by nothing, so refused as unknown)."""
    rest = path[len(RESPONSES_PREFIX) :]
    response_id, slash, tail = rest.partition("/")
    template = _SUFFIXES.get(slash + tail)
    return template if response_id and template is not None else path


def _response_id(ctx: RequestContext) -> str:
    return ctx.path[len(RESPONSES_PREFIX) :].partition("/")[0]


def _query(ctx: RequestContext) -> list[tuple[str, str]]:
    raw = ctx.scope.get("query_string") or b""
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True)


def unsupported(param: str, message: str) -> GatewayError:
    return bad_request(message, code="unsupported_parameter", param=param)


def invalid(param: str, message: str) -> GatewayError:
    return bad_request(message, code="invalid_value", param=param)


def _check_include(values: list[str]) -> None:
    for value in values:
        if value not in INCLUDE_VALUES:
            raise invalid("include", f"'{value[:100]}' is not a valid include value.")
        if value not in INCLUDE_KEPT:
            raise unsupported(
                "include",
                f"include '{value}' cannot be applied to a stored response: it is returned "
                "as it was answered. Ask for it when creating the response.",
            )


def _params(ctx: RequestContext, allowed: frozenset[str]) -> dict[str, list[str]]:
    """The query parameters by name (``include[]`` read as ``include``); one the
    endpoint does not know is refused by name."""
    params: dict[str, list[str]] = {}
    for name, value in _query(ctx):
        key = name[:-2] if name.endswith("[]") else name
        if key not in allowed:
            raise unsupported(key[:100], f"Unsupported query parameter: '{key[:100]}'.")
        params.setdefault(key, []).append(value)
    _check_include(params.get("include", []))
    return params


class _StoredResponseStage:
    """Shared by the four: the store, the scope, and finding the response."""

    name = StageName.STORED_RESPONSE

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def run(self, ctx: RequestContext) -> None:
        """``serve``, with every refusal decided (a bad parameter included)."""
        try:
            await self.serve(ctx)
        except GatewayError as error:
            if not ctx.decisions or ctx.decisions[-1].stage != self.name:
                ctx.decide(self.name, Outcome.DENY, f"refused: {error.code}")
            raise

    async def serve(self, ctx: RequestContext) -> None:
        raise NotImplementedError

    def _not_found(self, ctx: RequestContext, response_id: str) -> GatewayError:
        ctx.decide(self.name, Outcome.DENY, f"{response_id[:100]} not found in the key's scope")
        return response_not_found(response_id)

    def _target(self, ctx: RequestContext) -> tuple[str, int, int]:
        """The id in the path and the key's organisation and project."""
        assert ctx.key is not None
        response_id = _response_id(ctx)
        if not _ID.fullmatch(response_id):
            raise self._not_found(ctx, response_id)
        return response_id, ctx.key.identity.org_id, ctx.key.identity.project_id

    async def _store(self, ctx: RequestContext, call: Awaitable[T]) -> T:
        """A store call; its failure (503 unavailable, 400 refused) is decided and raised."""
        try:
            return await call
        except GatewayError as error:
            ctx.decide(self.name, Outcome.ERROR, f"response store: {error.code}")
            raise

    async def _find(self, ctx: RequestContext) -> StoredResponse:
        response_id, org_id, project_id = self._target(ctx)
        stored = await self._store(ctx, self.store.load(org_id, response_id, project_id=project_id))
        if stored is None:
            raise self._not_found(ctx, response_id)
        ctx.model_name = stored.model[:200]
        return stored


class RetrieveResponse(_StoredResponseStage):
    """``GET /v1/responses/{id}`` (``client.responses.retrieve``)."""

    allowed = frozenset({"include", "stream", "starting_after", "include_obfuscation"})

    async def serve(self, ctx: RequestContext) -> None:
        params = _params(ctx, self.allowed)
        if any(v.lower() not in ("false", "0") for v in params.get("stream", [])):
            raise unsupported("stream", "Streaming a stored response again is not supported.")
        if "starting_after" in params:
            raise unsupported("starting_after", "starting_after applies to streaming only.")
        stored = await self._find(ctx)
        ctx.decide(self.name, Outcome.ALLOW, f"retrieved {stored.id}")
        await send_json(ctx, 200, stored.response)


class DeleteResponse(_StoredResponseStage):
    """``DELETE /v1/responses/{id}``: gone for good (see ``apps.responses.models``)."""

    async def serve(self, ctx: RequestContext) -> None:
        _params(ctx, frozenset())
        response_id, org_id, project_id = self._target(ctx)
        deleted = await self._store(
            ctx, self.store.delete(org_id, response_id, project_id=project_id)
        )
        if not deleted:
            raise self._not_found(ctx, response_id)
        ctx.decide(self.name, Outcome.ALLOW, f"deleted {response_id}")
        # OpenAI's answer (its spec's example): the object type stays "response".
        await send_json(ctx, 200, {"id": response_id, "object": "response", "deleted": True})


def _limit(values: list[str]) -> int:
    if not values:
        return 20
    try:
        limit = int(values[-1])
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise invalid("limit", "limit must be an integer from 1 to 100.")
    return limit


def item_page(
    items: list[dict[str, Any]], *, limit: int, order: str, after: str | None
) -> dict[str, Any]:
    """One cursor page of ``items`` (oldest first), as OpenAI's ``ResponseItemList``."""
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise invalid("after", f"No item with id '{after[:100]}' in this list.")
        start = ids.index(after) + 1
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": start + limit < len(ordered),
    }


class ListInputItems(_StoredResponseStage):
    """``GET /v1/responses/{id}/input_items`` (``client.responses.input_items.list``)."""

    allowed = frozenset({"limit", "order", "after", "include"})

    async def serve(self, ctx: RequestContext) -> None:
        params = _params(ctx, self.allowed)
        limit = _limit(params.get("limit", []))
        order = (params.get("order") or ["desc"])[-1]
        if order not in ("asc", "desc"):
            raise invalid("order", "order must be 'asc' or 'desc'.")
        after = (params.get("after") or [None])[-1]
        response_id, org_id, project_id = self._target(ctx)
        chain = await self._store(ctx, self.store.chain(org_id, response_id, project_id=project_id))
        if chain is None:
            raise self._not_found(ctx, response_id)
        ctx.model_name = chain[-1].model[:200]
        page = item_page(input_items_of(chain), limit=limit, order=order, after=after)
        ctx.decide(self.name, Outcome.ALLOW, f"{len(page['data'])} input items of {response_id}")
        await send_json(ctx, 200, page)


class CancelResponse(_StoredResponseStage):
    """``POST /v1/responses/{id}/cancel``. Only a response created with ``background:
    true`` can be cancelled, and ``POST /v1/responses`` refuses ``background``: every
    stored response was answered synchronously, so the answer is OpenAI's own 400 for
    one (after the same 404 as elsewhere for an id not in the key's scope)."""

    async def serve(self, ctx: RequestContext) -> None:
        _params(ctx, frozenset())
        if ctx.raw_body.strip():
            try:
                body = orjson.loads(ctx.raw_body)
            except orjson.JSONDecodeError:
                raise bad_request("The request body is not valid JSON.") from None
            if not isinstance(body, dict):
                raise bad_request("The request body must be a JSON object.")
            if body:
                field = str(next(iter(body)))[:100]
                raise unsupported(field, f"Unsupported parameter: '{field}'.")
        stored = await self._find(ctx)
        if stored.response.get("background") is not True:
            ctx.decide(self.name, Outcome.DENY, f"{stored.id} is not a background response")
            raise bad_request("Cannot cancel a synchronous response.", code="not_cancellable")
        # A background response held here has finished (nothing runs in the background):
        # cancelling a finished one returns it unchanged, as OpenAI does.
        ctx.decide(self.name, Outcome.ALLOW, f"{stored.id} already finished")
        await send_json(ctx, 200, stored.response)
