"""GET / DELETE ``/v1/responses/{id}``, ``input_items`` and ``cancel`` with the official
openai SDK over real HTTP, on rows saved through the gateway's own database store:
scoped to the key's organisation and project (another's id is the same 404 as a missing
one, and nothing changes), recorded, and bounded when the database stalls."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import orjson
import psycopg
import pytest

from apps.gateway.response_store import response_not_found
from tests import conftest
from tests.factories import key_create, project_create, records_wait
from tests.responses.factories import chain_make, response_id, stored_make, user_item


def save(gateway, *stored) -> None:
    for row in stored:
        asyncio.run(gateway.response_store.save(row))


def load(gateway, stored):
    org_id = stored.org_id
    return asyncio.run(gateway.response_store.load(org_id, stored.id))


def sdk(gateway, issued) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)


def auth(issued) -> dict[str, str]:
    return {"Authorization": f"Bearer {issued.secret}"}


@pytest.fixture
def world(gateway):
    """Keys: ``mine``; ``sibling`` in another project of the same organisation; ``other``
    in another organisation."""
    mine = key_create()
    sibling = key_create(project_create(mine.key.project.team))
    other = key_create()
    gateway.snapshots.reload()
    return gateway, mine, sibling, other


def test_retrieve_answers_the_response_as_it_was_answered(world):
    gateway, mine, *_ = world
    stored = stored_make(mine.key, answer="stored answer")
    save(gateway, stored)
    response = sdk(gateway, mine).responses.retrieve(stored.id)
    assert isinstance(response, openai.types.responses.Response)
    assert (response.id, response.output_text, response.model) == (
        stored.id,
        "stored answer",
        "gpt-4o-mini",
    )
    raw = httpx.get(f"{gateway.url}/v1/responses/{stored.id}", headers=auth(mine))
    assert raw.content == orjson.dumps(stored.response)  # byte for byte, key order kept
    # include about input images: kept as sent, so satisfied.
    kept = httpx.get(
        f"{gateway.url}/v1/responses/{stored.id}",
        params={"include[]": "message.input_image.image_url", "stream": "false"},
        headers=auth(mine),
    )
    assert kept.status_code == 200
    records = records_wait(gateway, 3)
    assert {(r.endpoint, r.status_code) for r in records} == {("responses.retrieve", 200)}
    assert records[0].key_id == mine.key.pk and records[0].model_requested == "gpt-4o-mini"
    assert records[0].decisions[-1][:2] == ["stored_response", "allow"]


def test_input_items_are_what_the_response_was_generated_from(world):
    gateway, mine, *_ = world
    turns = chain_make(mine.key, 3)
    save(gateway, *turns)
    client = sdk(gateway, mine)
    expected = [
        item["id"] for turn in turns[:-1] for item in [*turn.input_items, *turn.response["output"]]
    ] + [turns[-1].input_items[0]["id"]]
    page = client.responses.input_items.list(turns[-1].id)  # desc, 20
    assert [item.id for item in page.data] == expected[::-1]
    assert page.has_more is False
    # The SDK's cursor paging, two at a time, oldest first.
    paged = client.responses.input_items.list(turns[-1].id, limit=2, order="asc")
    assert [item.id for item in paged] == expected
    raw = httpx.get(
        f"{gateway.url}/v1/responses/{turns[-1].id}/input_items",
        params={"limit": 2, "after": expected[-2], "order": "desc"},
        headers=auth(mine),
    ).json()
    assert raw["object"] == "list" and raw["has_more"] is True
    assert (raw["first_id"], raw["last_id"]) == (expected[-3], expected[-4])
    assert records_wait(gateway, 1)[0].endpoint == "responses.input_items"


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": "0"}, "limit", "invalid_value"),
        ({"limit": "101"}, "limit", "invalid_value"),
        ({"limit": "ten"}, "limit", "invalid_value"),
        ({"order": "sideways"}, "order", "invalid_value"),
        ({"after": "msg_nowhere"}, "after", "invalid_value"),
        ({"before": "msg_1"}, "before", "unsupported_parameter"),
        ({"include[]": "reasoning.encrypted_content"}, "include", "unsupported_parameter"),
        ({"include": "no.such.thing"}, "include", "invalid_value"),
    ],
)
def test_input_items_refuse_what_they_cannot_honour_by_name(world, params, param, code):
    gateway, mine, *_ = world
    stored = stored_make(mine.key)
    save(gateway, stored)
    refused = httpx.get(
        f"{gateway.url}/v1/responses/{stored.id}/input_items", params=params, headers=auth(mine)
    )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"stream": "true"}, "stream"),
        ({"starting_after": "3"}, "starting_after"),
        ({"include[]": "message.output_text.logprobs"}, "include"),
        ({"x_debug": "1"}, "x_debug"),
    ],
)
def test_retrieve_refuses_what_it_cannot_honour_by_name(world, params, param):
    gateway, mine, *_ = world
    stored = stored_make(mine.key)
    save(gateway, stored)
    refused = httpx.get(
        f"{gateway.url}/v1/responses/{stored.id}", params=params, headers=auth(mine)
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == param


def test_delete_removes_it_for_good(world):
    gateway, mine, *_ = world
    first, second = stored_make(mine.key), stored_make(mine.key)
    save(gateway, first, second)
    client = sdk(gateway, mine)
    assert client.responses.delete(first.id) is None  # the SDK reads no body
    raw = httpx.delete(f"{gateway.url}/v1/responses/{second.id}", headers=auth(mine))
    assert (raw.status_code, raw.json()) == (
        200,
        {"id": second.id, "object": "response", "deleted": True},
    )
    for gone in (first, second):
        assert load(gateway, gone) is None
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(gone.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.delete(gone.id)
    records = records_wait(gateway, 6)
    deletes = [(r.endpoint, r.status_code) for r in records if r.endpoint == "responses.delete"]
    assert sorted(deletes) == [("responses.delete", 200)] * 2 + [("responses.delete", 404)] * 2


def test_cancel_answers_openais_refusal_for_a_synchronous_response(world):
    gateway, mine, *_ = world
    stored = stored_make(mine.key)
    save(gateway, stored)
    client = sdk(gateway, mine)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.cancel(stored.id)
    assert info.value.body["message"] == "Cannot cancel a synchronous response."
    assert load(gateway, stored) == stored  # unchanged
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel(response_id())
    body = httpx.post(
        f"{gateway.url}/v1/responses/{stored.id}/cancel", json={"reason": "x"}, headers=auth(mine)
    ).json()["error"]
    assert (body["code"], body["param"]) == ("unsupported_parameter", "reason")
    records = records_wait(gateway, 3)
    assert {r.endpoint for r in records} == {"responses.cancel"}


def _four(gateway, issued, rid: str) -> list[httpx.Response]:
    """The four operations on ``rid`` with ``issued``'s key."""
    url = f"{gateway.url}/v1/responses/{rid}"
    return [
        httpx.get(url, headers=auth(issued)),
        httpx.get(url + "/input_items", headers=auth(issued)),
        httpx.post(url + "/cancel", headers=auth(issued)),
        httpx.delete(url, headers=auth(issued)),
    ]


@pytest.mark.parametrize("who", ["other_org", "other_project"])
def test_another_scopes_id_is_exactly_a_missing_one_and_nothing_changes(world, who):
    gateway, mine, sibling, other = world
    intruder = other if who == "other_org" else sibling
    stored = stored_make(mine.key)
    save(gateway, stored)
    missing = response_id()
    for theirs, nothing in zip(
        _four(gateway, intruder, stored.id), _four(gateway, intruder, missing), strict=True
    ):
        assert theirs.status_code == nothing.status_code == 404
        assert theirs.content == response_not_found(stored.id).body()
        assert nothing.content == response_not_found(missing).body()
        assert sorted(theirs.headers) == sorted(nothing.headers)
    assert load(gateway, stored) == stored  # the DELETE changed nothing
    assert sdk(gateway, mine).responses.retrieve(stored.id).id == stored.id
    # The other way round: the intruder's own response is not the owner's either.
    theirs = stored_make(intruder.key)
    save(gateway, theirs)
    assert [r.status_code for r in _four(gateway, mine, theirs.id)] == [404] * 4
    assert load(gateway, theirs) == theirs


def test_ids_the_gateway_never_hands_out_are_not_found(world):
    gateway, mine, *_ = world
    for rid in ("nope", "resp_" + "a" * 200, "resp_a%27;--"):
        answer = httpx.get(f"{gateway.url}/v1/responses/{rid}", headers=auth(mine))
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{gateway.url}/v1/responses/resp_x").status_code == 401  # no key
    wrong = httpx.put(f"{gateway.url}/v1/responses/resp_x", headers=auth(mine))
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (404, "unknown_endpoint")
    deeper = httpx.get(f"{gateway.url}/v1/responses/resp_x/input_items/x", headers=auth(mine))
    assert deeper.json()["error"]["code"] == "unknown_endpoint"


def test_two_gateways_sharing_the_database_see_each_others_responses(gateway_factory):
    first, second = gateway_factory(), gateway_factory()
    mine = key_create()
    for gateway in (first, second):
        gateway.snapshots.reload()
    assert first.response_store is not second.response_store
    stored = stored_make(mine.key, items=[user_item("kept by the first")])
    save(first, stored)
    assert sdk(second, mine).responses.retrieve(stored.id).output_text == "hi there"
    items = sdk(second, mine).responses.input_items.list(stored.id)
    assert [i.content[0].text for i in items.data] == ["kept by the first"]
    sdk(second, mine).responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        sdk(first, mine).responses.retrieve(stored.id)


STORE_TIMEOUT = 1.0
# A request during a stall answers within the store's bound plus this (a loaded 2-core
# machine: a behaviour bound, not a performance figure).
SLACK = 1.5


def test_a_stalled_database_is_a_503_within_the_bound_then_recovers(gateway_factory, settings):
    """A real stall: another session holds an exclusive lock on the table, so the
    store's queries wait on PostgreSQL; the answer is 503 store_unavailable in time."""
    settings.ODOCK_RESPONSE_STORE_TIMEOUT_SECONDS = STORE_TIMEOUT
    gateway = gateway_factory()
    mine = key_create()
    gateway.snapshots.reload()
    stored = stored_make(mine.key)
    save(gateway, stored)
    url = f"{gateway.url}/v1/responses/{stored.id}"
    with psycopg.connect(conftest.database_url()) as locker:
        locker.execute("LOCK TABLE responses_storedresponse IN ACCESS EXCLUSIVE MODE")
        for call in (
            lambda: httpx.get(url, headers=auth(mine), timeout=30),
            lambda: httpx.delete(url, headers=auth(mine), timeout=30),
            lambda: httpx.get(url + "/input_items", headers=auth(mine), timeout=30),
        ):
            started = time.monotonic()
            answer = call()
            took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "store_unavailable"
            assert answer.headers["retry-after"] == "2"
            assert STORE_TIMEOUT * 0.9 <= took <= STORE_TIMEOUT + SLACK
        locker.rollback()
    # The stalled threads gave up their connections; the next call reconnects.
    assert sdk(gateway, mine).responses.retrieve(stored.id).id == stored.id
    records = records_wait(gateway, 4)
    assert sorted(r.status_code for r in records) == [200, 503, 503, 503]
    failed = [r for r in records if r.status_code == 503][0]
    assert failed.error_code == "store_unavailable"
    assert failed.decisions[-1][:2] == ["stored_response", "error"]


def test_an_expired_response_is_not_found_before_the_purge(world):
    from apps.responses.models import StoredResponse as Row

    gateway, mine, *_ = world
    expired = stored_make(mine.key, created=round(time.time() - 31 * 86400, 3))
    save(gateway, expired)
    assert [r.status_code for r in _four(gateway, mine, expired.id)] == [404] * 4
    assert Row.objects.filter(pk=expired.id).exists()  # hidden, not yet purged
