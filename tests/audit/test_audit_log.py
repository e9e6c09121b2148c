"""The audit log: durable before the last byte, every refusal recorded, hash chains that
verify and name a tampered row, append-only in PostgreSQL, retention by sealed segment,
content capture per policy, and no record lost or doubled across a database outage."""

from __future__ import annotations

import concurrent.futures
import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import httpx
import openai
import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from apps.audit.chain import chain_verify
from apps.audit.models import AuditCheckpoint, AuditPurge, ContentCapture, RequestLog
from apps.audit.retention import audit_retention_purge
from apps.audit.segment_log import read_segment
from apps.policies.models import RateLimit
from tests.factories import allow_models, key_create, model_create, project_create, provider_create
from tests.netutil import TcpProxy

MESSAGES = [{"role": "user", "content": "hello"}]


def chat(gateway, secret: str, **extra) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, **extra},
        headers={"Authorization": f"Bearer {secret}"} if secret else {},
        timeout=30,
    )


@pytest.fixture
def world(gateway_factory, fake_upstream):
    model_create("m", provider_create(fake_upstream.url, name="up"), upstream_model="m-up")
    model_create("other", provider_create(fake_upstream.url, name="up2"))
    project = project_create()
    issued = key_create(project)
    RateLimit.objects.create(key=issued.key, rpm=3)
    return {"key": issued, "project": project, "upstream": fake_upstream}


def logged_records(spool: Path) -> list[dict]:
    """Every record in the segment logs of ``spool``, as they are on disk now."""
    return [r for path in sorted(spool.glob("*.seg")) for r in read_segment(path)]


def test_every_request_allowed_or_refused_is_durable_before_its_last_byte(
    world, gateway_factory, settings
):
    gateway = gateway_factory()  # durable by default
    gateway.snapshots.reload()
    secret = world["key"].secret
    other = key_create(project_create())
    allow_models(other.key.project, model_create("only-this", provider_create("http://x:1/v1")))
    gateway.snapshots.reload()
    responses = {
        "ok": chat(gateway, secret),
        "missing key": chat(gateway, ""),
        "unknown key": chat(gateway, "sk-odock-neverIssued000000000000000000"),
        "model not allowed": chat(gateway, other.secret),
        "unknown model": chat(gateway, secret, model="nope"),
        "bad body": chat(gateway, secret, messages="not a list"),
    }
    responses["rate limited"] = [chat(gateway, secret) for _ in range(3)][-1]
    expected = {
        "ok": (200, ""),
        "missing key": (401, "missing_api_key"),
        "unknown key": (401, "invalid_api_key"),
        "model not allowed": (403, "model_not_allowed"),
        "unknown model": (404, "model_not_found"),
        "bad body": (400, "invalid_type"),
        "rate limited": (429, "rate_limit_exceeded"),
    }
    # Read at once, with no waiting: every record was on disk (appended and synced to the
    # writer's segment log) before its response's body ended.
    on_disk = {r["request_id"] for r in logged_records(settings.ODOCK_AUDIT_SPOOL_DIR)}
    assert {r.headers["x-request-id"] for r in responses.values()} <= on_disk
    assert gateway.recorder.flush()  # then shipped to the database
    for name, response in responses.items():
        record = RequestLog.objects.get(request_id=response.headers["x-request-id"])
        status, code = expected[name]
        assert (response.status_code, record.status_code) == (status, status), name
        if code:
            assert record.error_code == code and response.json()["error"]["code"] == code
            assert any(d[1] == "deny" for d in record.decisions) or status == 400, name
        assert record.chain and record.seq and len(record.hash) == 64
    ok = RequestLog.objects.get(request_id=responses["ok"].headers["x-request-id"])
    assert ok.provider == "up" and ok.model_served == "m" and ok.overhead_ms is not None
    assert ok.key_id == world["key"].key.pk and ok.organization_id is not None


def test_audit_verify_passes_then_names_an_edited_and_a_deleted_record(world, gateway_factory):
    gateway = gateway_factory()
    gateway.snapshots.reload()
    other_org_key = key_create(project_create())
    gateway.snapshots.reload()
    ids = [chat(gateway, world["key"].secret).headers["x-request-id"] for _ in range(2)]
    ids += [chat(gateway, other_org_key.secret).headers["x-request-id"] for _ in range(3)]
    gateway.recorder.stop()  # a graceful shutdown seals every chain

    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue().startswith("OK: 5 records in 2 chains, 2 checkpoints")
    assert AuditCheckpoint.objects.count() == 2

    victim = ids[3]
    with connection.cursor() as cursor:  # someone with the table owner's rights
        cursor.execute("ALTER TABLE audit_requestlog DISABLE TRIGGER USER")
        cursor.execute("UPDATE audit_requestlog SET cost_usd = 0.5 WHERE request_id = %s", [victim])
    with pytest.raises(CommandError) as info:
        call_command("audit_verify")
    assert f"request {victim}" in str(info.value) and "edited" in str(info.value)

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_requestlog WHERE request_id = %s", [victim])
        cursor.execute("ALTER TABLE audit_requestlog ENABLE TRIGGER USER")
    report = chain_verify()
    assert not report.ok and ids[4] in report.first_broken and "missing" in report.reason
    # The other organisation's chain is intact on its own.
    assert chain_verify(organization_id=world["project"].team.organization_id).ok


def test_update_and_delete_are_refused_by_postgresql(world, gateway_factory):
    gateway = gateway_factory()
    gateway.snapshots.reload()
    request_id = chat(gateway, world["key"].secret).headers["x-request-id"]
    assert gateway.recorder.flush()
    rows = RequestLog.objects.filter(request_id=request_id)
    for attempt in (lambda: rows.update(cost_usd=Decimal("9")), rows.delete):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    assert rows.get().cost_usd < Decimal("0.01")


def test_retention_removes_whole_sealed_segments_and_the_chain_still_verifies(
    world, gateway_factory
):
    org = world["project"].team.organization
    org.audit_retention_days = 30
    org.save()
    gateway = gateway_factory()
    gateway.snapshots.reload()
    for _ in range(2):
        chat(gateway, world["key"].secret)
    gateway.recorder.flush()
    gateway.recorder._last_seal = 0  # seal the first segment now
    gateway.recorder._wake.set()
    deadline = time.monotonic() + 5
    while not AuditCheckpoint.objects.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    chat(gateway, world["key"].secret)  # a second, newer segment
    gateway.recorder.stop()

    # Just past 30 days after the first segment's newest record: it goes, whole; the
    # second segment (newer) stays.
    first = AuditCheckpoint.objects.order_by("first_seq").first()
    later = first.last_at + timedelta(days=30, microseconds=1)
    [purge] = audit_retention_purge(now=later)
    assert (purge.records, purge.segments, purge.organization_id) == (2, 1, org.pk)
    assert RequestLog.objects.filter(organization_id=org.pk).count() == 1
    assert AuditCheckpoint.objects.filter(purged_at__isnull=False).count() == 1
    report = chain_verify()
    assert report.ok and report.purged_segments == 1 and report.records == 1, report.summary()
    assert AuditPurge.objects.count() == 1


def test_content_capture_follows_the_most_specific_level(world, gateway_factory):
    project = world["project"]
    ContentCapture.objects.create(organization=project.team.organization, mode="full")
    ContentCapture.objects.create(key=world["key"].key, mode="none")
    captured = key_create(project)
    ContentCapture.objects.create(project=project, mode="full", max_bytes=300)
    gateway = gateway_factory()
    gateway.snapshots.reload()

    long_prompt = [{"role": "user", "content": "secret plan " * 100}]
    with_content = chat(gateway, captured.secret, messages=long_prompt)
    without = chat(gateway, world["key"].secret)
    assert gateway.recorder.flush()
    record = RequestLog.objects.get(request_id=with_content.headers["x-request-id"])
    assert record.content["mode"] == "full"
    assert record.content["request"].startswith('{"model":"m","messages":[{"role":"user"')
    assert len(record.content["request"]) == 300 and record.content["request_truncated"]
    assert "tok0" in record.content["response"]
    assert RequestLog.objects.get(request_id=without.headers["x-request-id"]).content is None


def test_a_database_outage_mid_load_loses_no_record_and_duplicates_none(
    world, gateway_processes, tmp_path
):
    port = int(connection.settings_dict.get("PORT") or 5432)
    proxy = TcpProxy(port)
    from tests import conftest

    url = conftest.database_url().replace(f":{port}/", f":{proxy.port}/")
    env = dict(
        DATABASE_URL=url,
        ODOCK_AUDIT_SPOOL_DIR=str(tmp_path / "spool"),
        ODOCK_DB_OUTAGE_GRACE_SECONDS="600",
        ODOCK_AUDIT_SEAL_SECONDS="0.5",
    )
    RateLimit.objects.all().delete()
    [gateway] = gateway_processes(1, **env)
    secret = world["key"].secret
    answered: list[str] = []

    def load(n: int) -> None:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
        for _ in range(n):
            raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            answered.append(raw.headers["x-request-id"])

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            running = [pool.submit(load, 40) for _ in range(4)]
            time.sleep(0.3)
            proxy.cut()  # the database goes away mid-load
            time.sleep(1.5)
            proxy.restore()
            for f in running:
                f.result()
        assert len(answered) == 160
        # Every record went through the segment log (the durability point), outage or not.
        assert list((tmp_path / "spool").glob("*.seg"))
        deadline = time.monotonic() + 30
        while RequestLog.objects.count() < 160:
            assert time.monotonic() < deadline, RequestLog.objects.count()
            time.sleep(0.2)
        stored = list(RequestLog.objects.values_list("request_id", flat=True))
        assert sorted(stored) == sorted(answered)  # all of them, each once
        gateway.stop()  # graceful: drains and seals
        assert chain_verify().ok, chain_verify().summary()
    finally:
        proxy.close()


def test_a_crashed_writers_spool_is_replayed_by_the_next_one(world, gateway_processes, tmp_path):
    """The database is away, a gateway spools and is killed; a new gateway replays it."""
    import signal

    port = int(connection.settings_dict.get("PORT") or 5432)
    proxy = TcpProxy(port)
    from tests import conftest

    url = conftest.database_url().replace(f":{port}/", f":{proxy.port}/")
    spool = tmp_path / "spool"
    env = dict(ODOCK_AUDIT_SPOOL_DIR=str(spool), ODOCK_DB_OUTAGE_GRACE_SECONDS="600")
    try:
        [first] = gateway_processes(1, DATABASE_URL=url, **env)
        proxy.cut()
        ids = [chat(first, world["key"].secret).headers["x-request-id"] for _ in range(5)]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert RequestLog.objects.count() == 0 and list(spool.glob("*.seg"))
        gateway_processes(1, **env)  # straight to the database
        deadline = time.monotonic() + 20
        while RequestLog.objects.count() < 5:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == sorted(ids)
        while list(spool.glob("*.seg")):  # the dead writer's segments go once replayed
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proxy.close()


def test_async_mode_does_not_hold_the_response(world, gateway_factory):
    gateway = gateway_factory(audit_durable=False)
    gateway.snapshots.reload()
    assert chat(gateway, world["key"].secret).status_code == 200
    assert gateway.recorder.flush()
    assert RequestLog.objects.count() == 1


def test_checkpoint_signatures_detect_a_forged_checkpoint(world, gateway_factory):
    gateway = gateway_factory()
    gateway.snapshots.reload()
    chat(gateway, world["key"].secret)
    gateway.recorder.stop()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER USER")
        cursor.execute("UPDATE audit_auditcheckpoint SET records = records + 1")
        cursor.execute("ALTER TABLE audit_auditcheckpoint ENABLE TRIGGER USER")
    report = chain_verify()
    assert not report.ok and "signature" in report.reason
