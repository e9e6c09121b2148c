"""The stored-response endpoints' pure parts and stages, with no server and no database
(a bare context and the in-memory store)."""

from __future__ import annotations

import asyncio

import pytest

from apps.gateway.errors import GatewayError
from apps.gateway.response_store import MemoryResponseStore, ResponseStoreUnavailable
from apps.gateway.snapshot import Identity, KeyEntry
from apps.gateway.stages.stored_responses import (
    CANCEL_PATH,
    INPUT_ITEMS_PATH,
    RESPONSE_PATH,
    DeleteResponse,
    RetrieveResponse,
    item_page,
    stored_response_path,
)
from tests.gateway.contexts import bare_context
from tests.responses.factories import response_object

ITEMS = [{"id": f"i{n}", "type": "message"} for n in range(5)]


def test_paths_map_to_their_routes():
    assert stored_response_path("/v1/responses/resp_1") == RESPONSE_PATH
    assert stored_response_path("/v1/responses/resp_1/input_items") == INPUT_ITEMS_PATH
    assert stored_response_path("/v1/responses/resp_1/cancel") == CANCEL_PATH
    for other in (
        "/v1/responses/",
        "/v1/responses//cancel",
        "/v1/responses/r/x",
        "/v1/responses/r/",
    ):
        assert stored_response_path(other) == other


def test_pages_follow_order_and_cursor():
    page = item_page(ITEMS, limit=2, order="desc", after=None)
    assert [i["id"] for i in page["data"]] == ["i4", "i3"]
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("i4", "i3", True)
    page = item_page(ITEMS, limit=2, order="asc", after="i2")
    assert [i["id"] for i in page["data"]] == ["i3", "i4"] and page["has_more"] is False
    last = item_page(ITEMS, limit=20, order="asc", after="i4")
    assert (last["data"], last["first_id"], last["last_id"], last["has_more"]) == (
        [],
        None,
        None,
        False,
    )
    with pytest.raises(GatewayError) as info:
        item_page(ITEMS, limit=2, order="asc", after="nope")
    assert (info.value.status, info.value.param) == (400, "after")


def _key(org_id: int, project_id: int) -> KeyEntry:
    identity = Identity(1, "k", "sk-odock-x", project_id, "p", 1, "t", org_id, "o", None)
    return KeyEntry(identity, None, False, True, None)


def _ctx(method: str, path: str, key: KeyEntry, sent: list):
    async def send(message):
        sent.append(message)

    return bare_context(method=method, path=path, key=key, send=send, scope={})


def test_the_stages_scope_to_the_keys_project():
    from apps.gateway.response_store import StoredResponse

    store = MemoryResponseStore()
    rid = "resp_abc"
    stored = StoredResponse(
        id=rid,
        org_id=1,
        key_id=1,
        project_id=10,
        model="m",
        response=response_object(rid, "m", "hi"),
        input_items=[],
        previous_response_id=None,
        created_at=0.0,
    )
    asyncio.run(store.save(stored))
    sent: list = []
    for key in (_key(2, 10), _key(1, 11)):  # another organisation; another project
        with pytest.raises(GatewayError) as info:
            asyncio.run(RetrieveResponse(store).run(_ctx("GET", f"/v1/responses/{rid}", key, sent)))
        assert (info.value.status, info.value.code) == (404, "not_found")
        with pytest.raises(GatewayError):
            asyncio.run(
                DeleteResponse(store).run(_ctx("DELETE", f"/v1/responses/{rid}", key, sent))
            )
    assert sent == [] and asyncio.run(store.load(1, rid)) == stored
    ctx = _ctx("GET", f"/v1/responses/{rid}", _key(1, 10), sent)
    asyncio.run(RetrieveResponse(store).run(ctx))
    assert sent[0]["status"] == 200 and ctx.decisions[-1].outcome == "allow"


def test_a_store_failure_is_decided_and_answered_as_it_is():
    class Stalled(MemoryResponseStore):
        async def load(self, *args, **kwargs):
            raise ResponseStoreUnavailable()

    ctx = _ctx("GET", "/v1/responses/resp_abc", _key(1, 10), [])
    with pytest.raises(ResponseStoreUnavailable) as info:
        asyncio.run(RetrieveResponse(Stalled()).run(ctx))
    assert (info.value.status, info.value.code) == (503, "store_unavailable")
    assert (ctx.decisions[-1].outcome, ctx.decisions[-1].reason) == (
        "error",
        "response store: store_unavailable",
    )


def test_a_refused_parameter_is_decided():
    ctx = _ctx("GET", "/v1/responses/resp_abc", _key(1, 10), [])
    ctx.scope = {"query_string": b"limit=5"}
    with pytest.raises(GatewayError) as info:
        asyncio.run(RetrieveResponse(MemoryResponseStore()).run(ctx))
    assert (info.value.code, info.value.param) == ("unsupported_parameter", "limit")
    assert [(d.stage, d.outcome, d.reason) for d in ctx.decisions] == [
        ("stored_response", "deny", "refused: unsupported_parameter")
    ]
