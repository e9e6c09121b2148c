"""Incremental snapshot updates (``apps.policies.snapshot_update``) against a full
build on a real database: every kind of change, applied from the change log, must leave
exactly the snapshot a full build gives — and a log that no longer covers the snapshot
must force the full build."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from apps.configlog.models import ConfigChange, Scope
from apps.configlog.services import config_change_record, config_log_prune
from apps.gateway.snapshot import Snapshot, SnapshotStale
from apps.gateway.snapshot_store import SnapshotStore
from apps.keys.models import VirtualKey
from apps.keys.services import key_revoke, key_rotate, key_suspend
from apps.policies.compile import snapshot_compile
from apps.policies.models import Budget, EndUserPolicy, ModelAccess, ModelAlias, RateLimit
from apps.policies.snapshot_update import snapshot_update
from apps.providers.models import Deployment, Model
from apps.tenancy.models import OutagePolicy
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    team_create,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _comparable(snapshot: Snapshot) -> tuple:
    """Everything the hot path reads (the build time and cursor aside)."""
    return (snapshot.keys_by_digest, snapshot.models, snapshot.digests_by_key)


@pytest.fixture
def world():
    provider = provider_create("http://127.0.0.1:9/v1")
    small = model_create("small", provider)
    large = model_create("large", provider)
    acme, other = org_create("acme"), org_create("other")
    search, ads = team_create(acme, "search"), team_create(acme, "ads")
    web = project_create(search, "web")
    batch = project_create(ads, "batch")
    far = project_create(team_create(other, "far"), "far")
    alice = get_user_model().objects.create_user("alice", password="x")
    keys = {
        "web1": key_create(web, "web1"),
        "web2": key_create(web, "web2", owner=alice),
        "batch1": key_create(batch, "batch1"),
        "far1": key_create(far, "far1"),
    }
    Budget.objects.create(team=search, limit_usd=Decimal("100"), period="monthly")
    Budget.objects.create(organization=acme, limit_usd=Decimal("1000"), period="monthly")
    RateLimit.objects.create(team=ads, rpm=60)
    ModelAccess.objects.create(team=search, model=small)
    return {
        "provider": provider,
        "small": small,
        "large": large,
        "acme": acme,
        "search": search,
        "ads": ads,
        "web": web,
        "batch": batch,
        "alice": alice,
        "keys": keys,
    }


def _key(world, name: str) -> VirtualKey:
    return VirtualKey.objects.get(pk=world["keys"][name].key.pk)


def _rename(obj, name: str) -> None:
    obj.name = name
    obj.save()


CHANGES = {
    "key revoked": lambda w: key_revoke(key=_key(w, "web1")),
    "key suspended": lambda w: key_suspend(key=_key(w, "batch1")),
    "key created": lambda w: key_create(w["web"], "web3"),
    "key rotated": lambda w: key_rotate(key=_key(w, "web2"), grace=timedelta(hours=1)),
    "key deleted": lambda w: _key(w, "far1").delete(),
    "key moved": lambda w: _move_key(w),
    "budget changed": lambda w: _budget_bump(w),
    "budget moved to a project": lambda w: _budget_move(w),
    "budget deleted": lambda w: Budget.objects.filter(organization=w["acme"]).delete(),
    "rate limit added to a person": lambda w: RateLimit.objects.create(user=w["alice"], rpm=5),
    "team renamed": lambda w: _rename(w["search"], "search-renamed"),
    "team deactivated": lambda w: _deactivate(w["ads"]),
    "project moved to another team": lambda w: _move_project(w),
    "org outage policy": lambda w: _fail_open(w["acme"]),
    "model access added": lambda w: ModelAccess.objects.create(
        key=_key(w, "web1"), model=w["large"]
    ),
    "model access removed": lambda w: ModelAccess.objects.filter(team=w["search"]).delete(),
    "model renamed": lambda w: _rename(Model.objects.get(pk=w["small"].pk), "small-2"),
    "model price changed": lambda w: _reprice(w["large"]),
    "deployment added": lambda w: Deployment.objects.create(
        model=w["large"], provider=w["provider"], upstream_model="large-b", weight=3
    ),
    "alias added": lambda w: ModelAlias.objects.create(
        project=w["web"], alias="s", model=w["small"]
    ),
    "end-user policy added": lambda w: EndUserPolicy.objects.create(
        organization=w["acme"], end_user="*", rpm=10
    ),
    "person deleted": lambda w: get_user_model().objects.filter(pk=w["alice"].pk).delete(),
}


def _move_key(w) -> None:
    key = _key(w, "batch1")
    key.project = w["web"]
    key.save()


def _budget_bump(w) -> None:
    budget = Budget.objects.get(team=w["search"])
    budget.limit_usd += 1
    budget.save()


def _budget_move(w) -> None:
    budget = Budget.objects.get(team=w["search"])
    budget.team, budget.project = None, w["batch"]
    budget.save()


def _deactivate(team) -> None:
    team.is_active = False
    team.save()


def _move_project(w) -> None:
    project = w["web"].__class__.objects.get(pk=w["web"].pk)
    project.team = w["ads"]
    project.save()


def _fail_open(org) -> None:
    org.outage_policy = OutagePolicy.FAIL_OPEN
    org.save()


def _reprice(model) -> None:
    model = Model.objects.get(pk=model.pk)
    model.output_per_mtok = Decimal("9")
    model.save()


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_applied_incrementally_equals_a_full_build(world, change):
    before = snapshot_compile()
    CHANGES[change](world)
    updated = snapshot_update(before)
    assert updated is not None
    full = snapshot_compile()
    assert _comparable(updated) == _comparable(full)
    assert updated.log_cursor == full.log_cursor
    assert _comparable(updated) != _comparable(before)  # the change did reach the snapshot


def test_every_change_in_a_row_equals_a_full_build(world):
    snapshot = snapshot_compile()
    for change in CHANGES.values():
        change(world)
        snapshot = snapshot_update(snapshot) or snapshot
    assert _comparable(snapshot) == _comparable(snapshot_compile())


def test_a_revoked_key_is_refused_and_the_others_untouched(world):
    before = snapshot_compile()
    key_revoke(key=_key(world, "web1"))
    updated = snapshot_update(before)
    revoked = world["keys"]["web1"].key.digest
    assert updated.keys_by_digest[revoked].revoked
    for digest, entry in before.keys_by_digest.items():
        if digest != revoked:  # shared, not rebuilt: the update cost one key
            assert updated.keys_by_digest[digest] is entry


def test_nothing_changed_means_no_new_snapshot(world):
    snapshot = snapshot_compile()
    assert snapshot_update(snapshot) is None


def test_a_rolled_back_change_leaves_no_trace(world):
    snapshot = snapshot_compile()
    with pytest.raises(RuntimeError), transaction.atomic():
        key_revoke(key=_key(world, "web1"))
        raise RuntimeError("abort")
    assert snapshot_update(snapshot) is None
    key_revoke(key=_key(world, "web2"))  # the next id, past the hole the rollback left
    updated = snapshot_update(snapshot)
    assert not updated.keys_by_digest[world["keys"]["web1"].key.digest].revoked
    assert updated.keys_by_digest[world["keys"]["web2"].key.digest].revoked


def test_a_gap_in_the_log_forces_a_full_build(world):
    snapshot = snapshot_compile()
    key_revoke(key=_key(world, "web1"))
    assert config_log_prune(older_than=timedelta(0)) >= 1
    with pytest.raises(SnapshotStale):
        snapshot_update(snapshot)
    # The store then rebuilds in full, and later updates work from the new cursor.
    store = SnapshotStore(
        loader=snapshot_compile, version_reader=lambda: 0, poll_seconds=1, updater=snapshot_update
    )
    store.current = snapshot
    store.update()
    assert store.current.keys_by_digest[world["keys"]["web1"].key.digest].revoked
    assert store.current.log_cursor >= snapshot.log_cursor
    key_revoke(key=_key(world, "web2"))
    store.update()
    assert store.current.keys_by_digest[world["keys"]["web2"].key.digest].revoked


def test_a_log_reset_forces_a_full_build(world):
    key_revoke(key=_key(world, "web1"))
    snapshot = snapshot_compile()
    ConfigChange.objects.all().delete()  # e.g. a database restored from an older dump
    with pytest.raises(SnapshotStale):
        snapshot_update(snapshot)


def test_a_change_of_unknown_reach_forces_a_full_build(world):
    snapshot = snapshot_compile()
    config_change_record(scope=Scope.ALL, object_id=None, source="test")
    with pytest.raises(SnapshotStale):
        snapshot_update(snapshot)


def test_a_change_outside_the_snapshot_moves_only_the_version(world):
    from apps.mcp.models import McpServer

    snapshot = snapshot_compile()
    McpServer.objects.create(name="tickets", url="http://127.0.0.1:9/mcp")
    # The version bump waits for the commit (autocommit here: already done).
    updated = snapshot_update(snapshot)
    assert updated is not None
    assert updated.version != snapshot.version  # the MCP policy reloads on it
    assert updated.keys_by_digest is snapshot.keys_by_digest


def test_updates_kept_on_disk_are_served_by_a_restart_without_the_database(world, tmp_path):
    from apps.core.crypto import decrypt_bytes, encrypt_bytes
    from apps.gateway.snapshot_file import (
        snapshot_delta_append,
        snapshot_file_load,
        snapshot_file_save,
    )
    from apps.policies.snapshot_update import snapshot_changes

    kept = tmp_path / "policy-snapshot"
    snapshot = snapshot_compile()
    snapshot_file_save(kept, snapshot, encrypt_bytes)
    for change in ("key revoked", "key created", "team deactivated", "model price changed"):
        CHANGES[change](world)
        delta = snapshot_changes(snapshot)
        snapshot_delta_append(kept, delta, encrypt_bytes)
        snapshot = snapshot_update(snapshot)
    # A torn last record (a crash while appending) loses only itself.
    with open(kept.with_name(kept.name + ".delta"), "ab") as handle:
        handle.write(b"\x00\x00\x10\x00partial")
    loaded = snapshot_file_load(kept, decrypt_bytes)
    assert _comparable(loaded) == _comparable(snapshot)
    assert loaded.keys_by_digest[world["keys"]["web1"].key.digest].revoked
    # The next full snapshot replaces the updates.
    snapshot_file_save(kept, snapshot_compile(), encrypt_bytes)
    assert not kept.with_name(kept.name + ".delta").exists()
    assert _comparable(snapshot_file_load(kept, decrypt_bytes)) == _comparable(snapshot)


def test_a_change_id_is_handed_out_only_after_earlier_writers_committed(world):
    """What lets a reader advance past a missing id: a writer waits for the one before."""
    import threading

    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the writers' lock is PostgreSQL's (SQLite serialises writers itself)")
    in_transaction, committed, seen = threading.Event(), threading.Event(), {}

    def slow() -> None:
        try:
            with transaction.atomic():
                config_change_record(scope=Scope.NONE, object_id=None, source="slow")
                in_transaction.set()
                committed.wait(0.5)  # still uncommitted while the other writer starts
            committed.set()
        finally:
            connection.close()

    def fast() -> None:
        try:
            in_transaction.wait(10)
            config_change_record(scope=Scope.NONE, object_id=None, source="fast")  # autocommit
            # The slow writer's change is visible the moment the fast one's call returns.
            seen["slow committed first"] = ConfigChange.objects.filter(source="slow").exists()
        finally:
            connection.close()

    threads = [threading.Thread(target=slow), threading.Thread(target=fast)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"slow committed first": True}
    order = ConfigChange.objects.filter(source__in=("slow", "fast")).values_list(
        "source", flat=True
    )
    assert list(order.order_by("id")) == ["slow", "fast"]


def test_a_change_reaching_many_keys_reads_whole_tables_and_equals_a_full_build(world, monkeypatch):
    monkeypatch.setattr("apps.policies.compile.SCOPED_KEYS_MAX", 0)  # every scope is "large"
    before = snapshot_compile()
    _fail_open(world["acme"])
    _budget_bump(world)
    updated = snapshot_update(before)
    assert _comparable(updated) == _comparable(snapshot_compile()) != _comparable(before)
    # Only the keys below the changed levels were replaced.
    far = world["keys"]["far1"].key.digest
    assert updated.keys_by_digest[far] is before.keys_by_digest[far]
