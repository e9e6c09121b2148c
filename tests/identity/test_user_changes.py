"""A person's changes reach running gateways through the change log (``apps.configlog``):
a rename relabels their own budgets and limits, a deactivation refuses their keys until
they are reactivated — applied incrementally, equal to a full build."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import update_last_login
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.configlog.models import ConfigChange, Scope
from apps.gateway.snapshot import Snapshot
from apps.policies.compile import snapshot_compile
from apps.policies.models import Budget, RateLimit
from apps.policies.snapshot_update import snapshot_update
from tests.factories import key_create, model_create, org_create, project_create, team_create

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def world():
    users = get_user_model().objects
    alice, bob = users.create_user("alice", password="x"), users.create_user("bob", password="x")
    project = project_create(team_create(org_create("acme"), "search"), "web")
    RateLimit.objects.create(user=alice, rpm=600)
    Budget.objects.create(user=alice, limit_usd=Decimal("10"), period="monthly")
    return {
        "alice": alice,
        "project": project,
        "alice_key": key_create(project, "alice-key", owner=alice),
        "bob_key": key_create(project, "bob-key", owner=bob),
        "shared_key": key_create(project, "shared-key"),
    }


def _person(world, name: str = "alice"):
    return get_user_model().objects.get(pk=world[name].pk)


def _set(user, **fields) -> None:
    for name, value in fields.items():
        setattr(user, name, value)
    user.save()


def _user_changes() -> list[int | None]:
    """The people logged as changed (rules at a person's level are logged too: not these)."""
    rows = ConfigChange.objects.filter(scope=Scope.USER, source=get_user_model()._meta.label)
    return list(rows.values_list("object_id", flat=True))


def _comparable(snapshot: Snapshot) -> tuple:
    return (snapshot.keys_by_digest, snapshot.models, snapshot.digests_by_key)


def _entry(snapshot: Snapshot, world, key: str):
    return snapshot.keys_by_digest[world[key].key.digest]


# --- the change log ------------------------------------------------------------------------


def test_a_rename_or_a_deactivation_is_logged_for_the_person(world):
    alice = _person(world)
    _set(alice, username="alice.smith")
    _set(alice, is_active=False)
    _set(alice, is_active=True)
    assert _user_changes() == [alice.pk] * 3


def test_changes_the_snapshot_does_not_compile_are_not_logged(world):
    users = get_user_model().objects
    created = users.create_user("carol", password="x")  # owns no key yet
    alice = _person(world)
    _set(alice, email="alice@example.com", first_name="Alice")
    _set(alice, username="alice")  # saved unchanged
    alice.set_password("y")
    alice.save(update_fields=["password"])
    with CaptureQueriesContext(connection) as login:
        update_last_login(None, alice)
    assert len(login) == 1  # the UPDATE alone: a login reads nothing more
    _set(created, is_active=False)  # a new person's deactivation is logged, like any other
    assert _user_changes() == [created.pk]


# --- a running snapshot ----------------------------------------------------------------


def test_a_rename_relabels_only_the_persons_keys(world):
    before = snapshot_compile()
    assert {r.level for r in _entry(before, world, "alice_key").limits} >= {"user:alice"}
    _set(_person(world), username="alice.smith")
    updated = snapshot_update(before)
    assert updated is not None
    levels = {r.level for r in _entry(updated, world, "alice_key").limits}
    assert "user:alice.smith" in levels and "user:alice" not in levels
    assert _comparable(updated) == _comparable(snapshot_compile())
    for key in ("bob_key", "shared_key"):  # not rebuilt
        assert _entry(updated, world, key) is _entry(before, world, key)


def test_a_deactivated_persons_keys_are_inactive_until_reactivated(world):
    snapshot = snapshot_compile()
    assert _entry(snapshot, world, "alice_key").active
    _set(_person(world), is_active=False)
    deactivated = snapshot_update(snapshot)
    assert deactivated is not None
    assert not _entry(deactivated, world, "alice_key").active
    assert _entry(deactivated, world, "bob_key").active
    assert _entry(deactivated, world, "shared_key").active
    assert _comparable(deactivated) == _comparable(snapshot_compile())

    _set(_person(world), is_active=True)
    reactivated = snapshot_update(deactivated)
    assert reactivated is not None
    assert _entry(reactivated, world, "alice_key").active
    assert _comparable(reactivated) == _comparable(snapshot_compile())


def test_a_full_build_also_refuses_a_deactivated_persons_keys(world):
    _set(_person(world), is_active=False)
    snapshot = snapshot_compile()
    assert not _entry(snapshot, world, "alice_key").active
    assert _entry(snapshot, world, "bob_key").active


# --- through a running gateway ---------------------------------------------------------


def _chat(gateway, secret: str):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    return client.chat.completions.create(model="alpha", messages=MESSAGES)


def _levels(gateway, secret: str) -> set[str]:
    response = httpx.get(gateway.url + "/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200, response.text
    body = response.json()
    return {item["level"] for item in body["budgets"] + body["rate_limits"]}


def test_a_running_gateway_sees_the_rename_and_the_deactivation(world, gateway, fake_upstream):
    from tests.factories import provider_create

    model_create("alpha", provider_create(fake_upstream.url))
    gateway.snapshots.reload()
    alice, bob = world["alice_key"].secret, world["bob_key"].secret
    assert _levels(gateway, alice) == {"user:alice"}
    assert _chat(gateway, alice).choices

    _set(_person(world), username="alice.smith")
    gateway.snapshots.update()  # the incremental path: what each poll runs
    assert _levels(gateway, alice) == {"user:alice.smith"}

    _set(_person(world), is_active=False)
    gateway.snapshots.update()
    with pytest.raises(openai.AuthenticationError) as refused:
        _chat(gateway, alice)
    assert refused.value.response.json()["error"]["code"] == "key_inactive"
    assert _chat(gateway, bob).choices  # another person's key is untouched

    _set(_person(world), is_active=True)
    gateway.snapshots.update()
    assert _chat(gateway, alice).choices
    assert fake_upstream.requests  # the answers did come from the upstream
