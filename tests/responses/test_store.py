"""The stored-responses contract, against both stores: the database one (real
PostgreSQL, its own threads) and the in-memory one kept in step with it."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.db import IntegrityError

from apps.gateway.response_store import (
    MemoryResponseStore,
    ResponseStoreRefused,
    StoreLimits,
    conversation_items,
    input_items_of,
    stored_size,
)
from apps.responses.models import StoredResponse as Row
from apps.responses.store import DatabaseResponseStore
from tests.factories import key_create, project_create
from tests.responses.factories import chain_make, stored_make

pytestmark = pytest.mark.usefixtures("transactional_db")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["database", "memory"])
def make_store(request):
    """A factory of stores of the parametrised kind (``limits`` may be given)."""
    made: list = []

    def make(limits: StoreLimits | None = None):
        if request.param == "memory":
            return MemoryResponseStore(limits)
        store = DatabaseResponseStore(timeout=5, threads=2, limits=limits)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close(wait=True)


@pytest.fixture
def keys():
    """Two keys of one organisation (two projects) and one of another organisation."""
    mine = key_create()
    sibling = key_create(project_create(mine.key.project.team))
    other = key_create()
    return mine.key, sibling.key, other.key


def scope(key) -> tuple[int, int]:
    return key.project.team.organization_id, key.project_id


def test_save_and_load_keep_exactly_what_was_answered(make_store, keys):
    store = make_store()
    mine, _sibling, _other = keys
    stored = stored_make(mine, text="nul \u0000 and ünïcode", answer="ok \u0000")
    run(store.save(stored))
    org_id, project_id = scope(mine)
    loaded = run(store.load(org_id, stored.id))
    assert loaded == stored
    assert list(loaded.response) == list(stored.response)  # key order kept
    assert run(store.load(org_id, stored.id, project_id=project_id)) == stored


def test_another_organisation_or_project_finds_nothing_and_changes_nothing(make_store, keys):
    store = make_store()
    mine, sibling, other = keys
    stored = stored_make(mine)
    run(store.save(stored))
    other_org, other_project = scope(other)
    assert run(store.load(other_org, stored.id)) is None
    assert run(store.chain(other_org, stored.id)) is None
    assert run(store.conversation(other_org, stored.id)) is None
    assert run(store.delete(other_org, stored.id)) is False
    # Same organisation, another project: found only when the caller does not narrow.
    org_id, sibling_project = scope(sibling)
    assert run(store.load(org_id, stored.id, project_id=sibling_project)) is None
    assert run(store.delete(org_id, stored.id, project_id=sibling_project)) is False
    assert run(store.load(org_id, stored.id)) == stored  # still there, unchanged
    assert run(store.delete(org_id, stored.id, project_id=scope(mine)[1])) is True
    assert run(store.load(org_id, stored.id)) is None
    assert run(store.delete(org_id, stored.id)) is False  # once


def test_a_chain_is_its_turns_in_order(make_store, keys):
    store = make_store()
    mine, *_ = keys
    turns = chain_make(mine, 3)
    for stored in turns:
        run(store.save(stored))
    org_id, project_id = scope(mine)
    assert run(store.chain(org_id, turns[-1].id, project_id=project_id)) == turns
    items = run(store.conversation(org_id, turns[-1].id))
    texts = [part["text"] for item in items for part in item["content"]]
    assert texts == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert conversation_items(turns) == items
    # What the last one was generated from: everything before, then its own input.
    inputs = [item["content"][0]["text"] for item in input_items_of(turns)]
    assert inputs == ["q0", "a0", "q1", "a1", "q2"]
    assert run(store.chain(org_id, turns[0].id)) == turns[:1]


def test_a_chain_with_a_turn_gone_is_refused_not_shortened(make_store, keys):
    store = make_store()
    mine, *_ = keys
    turns = chain_make(mine, 3)
    for stored in turns:
        run(store.save(stored))
    org_id, _ = scope(mine)
    assert run(store.delete(org_id, turns[1].id))
    with pytest.raises(ResponseStoreRefused) as info:
        run(store.conversation(org_id, turns[2].id))
    assert (info.value.status, info.value.code, info.value.param) == (
        400,
        "previous_response_not_found",
        "previous_response_id",
    )
    assert turns[1].id in info.value.message
    assert run(store.chain(org_id, turns[0].id)) == turns[:1]


def test_a_chain_spanning_projects_is_not_shown_to_one_of_them(make_store, keys):
    store = make_store()
    mine, sibling, _ = keys
    first = stored_make(sibling)
    second = stored_make(mine, previous=first.id)
    run(store.save(first))
    run(store.save(second))
    org_id, project_id = scope(mine)
    with pytest.raises(ResponseStoreRefused):
        run(store.chain(org_id, second.id, project_id=project_id))
    assert run(store.chain(org_id, second.id)) == [first, second]  # organisation scope


def test_chains_past_the_limits_are_refused(make_store, keys):
    mine, *_ = keys
    org_id, _ = scope(mine)
    store = make_store(StoreLimits(max_chain=3))
    turns = chain_make(mine, 4)
    for stored in turns:
        run(store.save(stored))
    assert run(store.chain(org_id, turns[2].id)) == turns[:3]
    with pytest.raises(ResponseStoreRefused) as info:
        run(store.chain(org_id, turns[3].id))
    assert info.value.code == "conversation_too_long"

    big = chain_make(mine, 3)
    size = stored_size(big[0])  # the turns are about this size each
    small = make_store(StoreLimits(max_conversation_bytes=size * 5 // 2))
    for stored in big:
        run(small.save(stored))
    assert len(run(small.chain(org_id, big[1].id))) == 2
    with pytest.raises(ResponseStoreRefused) as info:
        run(small.chain(org_id, big[2].id))
    assert info.value.code == "conversation_too_long"


def test_a_response_past_the_size_cap_is_refused_and_not_kept(make_store, keys):
    mine, *_ = keys
    store = make_store(StoreLimits(max_stored_bytes=4096))
    stored = stored_make(mine, text="x" * 5000)
    with pytest.raises(ResponseStoreRefused) as info:
        run(store.save(stored))
    assert (info.value.code, info.value.param) == ("stored_response_too_large", "store")
    assert run(store.load(scope(mine)[0], stored.id)) is None
    run(store.save(stored_make(mine, text="x" * 100)))  # under it: kept


def test_the_database_store_is_one_query_per_call(keys, django_assert_num_queries):
    """Load and the whole chain are one query each (the organisation's retention
    joined); a save is one INSERT."""
    from apps.responses.selectors import stored_response_chain, stored_response_get
    from apps.responses.services import stored_response_save

    mine, *_ = keys
    turns = chain_make(mine, 5)
    with django_assert_num_queries(5):
        for stored in turns:
            stored_response_save(stored=stored, max_bytes=1 << 20)
    org_id, project_id = scope(mine)
    with django_assert_num_queries(1):
        assert stored_response_get(org_id=org_id, response_id=turns[0].id) == turns[0]
    with django_assert_num_queries(1):
        chain = stored_response_chain(
            org_id=org_id, response_id=turns[-1].id, project_id=project_id, limits=StoreLimits()
        )
    assert chain == turns
    assert Row.objects.get(pk=turns[0].id).size_bytes > 0


def test_two_stores_share_the_database(keys):
    """Two gateway processes each have their own store: what one saves the other reads
    and can delete."""
    mine, *_ = keys
    org_id, _ = scope(mine)
    first, second = DatabaseResponseStore(threads=1), DatabaseResponseStore(threads=1)
    try:
        stored = stored_make(mine)
        run(first.save(stored))
        assert run(second.load(org_id, stored.id)) == stored
        assert run(second.delete(org_id, stored.id))
        assert run(first.load(org_id, stored.id)) is None
    finally:
        first.close(wait=True)
        second.close(wait=True)


def test_saving_twice_under_one_id_is_refused_by_the_database(keys):
    """Ids are the gateway's; a collision is never an overwrite of someone's response."""
    mine, _, other = keys
    store = DatabaseResponseStore(threads=1)
    try:
        stored = stored_make(mine)
        run(store.save(stored))
        with pytest.raises(IntegrityError):  # a bug (a 500), not an outage (a 503)
            run(store.save(stored_make(other, rid=stored.id)))
        assert run(store.load(scope(mine)[0], stored.id)) == stored
    finally:
        store.close(wait=True)


def test_a_load_is_timed(keys):
    """A load of a kept response takes milliseconds (the pool's threads keep their
    connections)."""
    mine, *_ = keys
    store = DatabaseResponseStore(threads=1)
    try:
        stored = stored_make(mine)
        run(store.save(stored))

        async def loads() -> float:
            started = time.perf_counter()
            for _ in range(50):
                await store.load(scope(mine)[0], stored.id)
            return (time.perf_counter() - started) / 50

        assert run(loads()) < 0.05
    finally:
        store.close(wait=True)


def test_one_response_larger_than_the_conversation_limit_is_refused_too(make_store, keys):
    mine, *_ = keys
    store = make_store(StoreLimits(max_conversation_bytes=100))
    stored = stored_make(mine)
    run(store.save(stored))
    assert run(store.load(scope(mine)[0], stored.id)) == stored  # kept, readable
    with pytest.raises(ResponseStoreRefused) as info:
        run(store.chain(scope(mine)[0], stored.id))  # but not loaded as a conversation
    assert info.value.code == "conversation_too_long"
