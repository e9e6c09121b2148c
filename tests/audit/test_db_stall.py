"""PostgreSQL stalls (black-holed, not refused): every wait on it is bounded, records go to
the spool before the response's last byte, a restarted gateway serves from its last
snapshot, and a crashed writer's chain is sealed by the next one.

The database is black-holed by a TCP proxy the test starts (``TcpProxy.blackhole()``: the
sockets stay open, every byte is dropped), never by touching the shared server.
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
from io import StringIO
from pathlib import Path

import httpx
import openai
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.audit.chain import chain_verify
from apps.audit.models import RequestLog
from apps.audit.writer import RequestLogWriter
from apps.guardrails.models import GuardrailRule
from apps.policies.models import RateLimit
from apps.tenancy.models import OutagePolicy
from tests import conftest
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    team_create,
)
from tests.netutil import TcpProxy

DB_TIMEOUT = 1.0  # ODOCK_DB_TIMEOUT_SECONDS in these tests
# A response during a stall may wait for the database this long at most (generous on a
# loaded 2-core machine: a behaviour bound, not a performance figure).
STALL_BOUND = DB_TIMEOUT + 2.0


@pytest.fixture
def proxied(transactional_db):
    """A TCP proxy in front of the test's PostgreSQL, and the DATABASE_URL through it."""
    port = int(connection.settings_dict.get("PORT") or 5432)
    proxy = TcpProxy(port)
    url = conftest.database_url().replace(f":{port}/", f":{proxy.port}/")
    yield proxy, url
    proxy.close()


@pytest.fixture
def world(transactional_db, fake_upstream):
    model_create("m", provider_create(fake_upstream.url))

    def key_of(policy: str, *, limited: bool) -> str:
        org = org_create()
        org.outage_policy = policy
        org.save()
        issued = key_create(project_create(team_create(org)))
        if limited:
            RateLimit.objects.create(organization=org, rpm=10_000)
        else:  # a guardrail is not governance state: part of the snapshot
            GuardrailRule.objects.create(organization=org, detector="email", action="block")
        return issued.secret

    return {
        # No budget or limit anywhere: needs no governance state, served during outages.
        "free": key_of(OutagePolicy.FAIL_CLOSED, limited=False),
        "strict": key_of(OutagePolicy.FAIL_CLOSED, limited=True),
        "lenient": key_of(OutagePolicy.FAIL_OPEN, limited=True),
    }


def _env(**extra: str) -> dict[str, str]:
    """The test's gateway processes share its spool directory (``tmp_path / "audit-spool"``,
    as ``gateway_factory``'s in-process gateways do) and its kept snapshot."""
    return {
        "ODOCK_DB_TIMEOUT_SECONDS": str(DB_TIMEOUT),
        "ODOCK_DB_OUTAGE_GRACE_SECONDS": "1",
        **extra,
    }


class Client:
    """The official SDK; remembers the request id of every response it got, and how long
    each took."""

    def __init__(self, gateway) -> None:
        self.url = gateway.url + "/v1"
        self.seen: list[str] = []
        self.delays: list[float] = []
        self._clients: dict[tuple[str, str], openai.OpenAI] = {}

    def chat(self, secret: str, content: str = "hello") -> int:
        client = self._clients.get((self.url, secret))
        if client is None:
            client = openai.OpenAI(base_url=self.url, api_key=secret, max_retries=0, timeout=30)
            self._clients[(self.url, secret)] = client
        started = time.monotonic()
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": content}]
            )
            status, request_id = raw.status_code, raw.headers["x-request-id"]
        except openai.APIStatusError as error:
            status, request_id = error.status_code, error.response.headers["x-request-id"]
        self.delays.append(time.monotonic() - started)
        self.seen.append(request_id)
        return status


def _kill(gateway) -> None:
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(10)


def _stored_exactly_once(request_ids: list[str], timeout: float = 20, others: int = 0) -> None:
    """Every one of ``request_ids`` is stored, once; and ``others`` records besides."""
    deadline = time.monotonic() + timeout
    while RequestLog.objects.filter(request_id__in=request_ids).count() < len(request_ids):
        assert time.monotonic() < deadline, "records lost"
        time.sleep(0.2)
    stored = list(RequestLog.objects.values_list("request_id", flat=True))
    assert len(stored) == len(set(stored)) == len(request_ids) + others
    assert set(request_ids) <= set(stored)


def test_a_black_holed_database_loses_no_record_and_holds_no_response(
    world, gateway_processes, proxied
):
    proxy, url = proxied
    env = _env()
    [gateway] = gateway_processes(1, DATABASE_URL=url, **env)
    client = Client(gateway)
    for _ in range(3):  # the database answers: the writer's and the poller's connections open
        assert client.chat(world["free"]) == 200
    time.sleep(0.5)

    proxy.blackhole()
    stalled = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: client.chat(world["free"]), range(12)))
    # Past the outage grace: an organisation with no limits is still served.
    time.sleep(max(0.0, stalled + 1.5 - time.monotonic()))
    statuses += [client.chat(world["free"]) for _ in range(4)]
    assert statuses == [200] * 16
    assert max(client.delays) < STALL_BOUND, client.delays

    _kill(gateway)  # whatever was answered must be on disk already
    proxy.restore()
    [second] = gateway_processes(1, **env)  # straight to the database; replays the spool
    _stored_exactly_once(client.seen)
    second.stop()  # graceful: seals its chains; the dead writer's were adopted and sealed
    report = chain_verify()
    assert report.ok and report.unsealed == 0, report.summary()


def test_a_gateway_restarted_while_the_database_is_away_serves_from_its_last_snapshot(
    world, gateway_processes, proxied
):
    proxy, url = proxied
    env = _env()
    [first] = gateway_processes(1, DATABASE_URL=url, **env)
    client = Client(first)
    assert [client.chat(world[k]) for k in ("free", "strict", "lenient")] == [200] * 3
    _kill(first)

    proxy.blackhole()
    [second] = gateway_processes(1, DATABASE_URL=url, ready=False, **env)
    ready = httpx.get(second.url + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"snapshot": True, "database": False}
    client.url = second.url + "/v1"
    # Each organisation's outage policy, from the snapshot the first process left on disk.
    assert client.chat(world["free"]) == 200
    assert client.chat(world["strict"]) == 503
    record_503 = client.seen[-1]
    assert client.chat(world["lenient"]) == 200
    assert client.chat(world["free"], "write to jane@example.com") == 400  # its guardrail
    assert max(client.delays) < STALL_BOUND, client.delays

    proxy.restore()
    _stored_exactly_once(client.seen)
    row = RequestLog.objects.get(request_id=record_503)
    assert (row.status_code, row.error_code) == (503, "governance_unavailable")


def test_a_gateway_with_no_snapshot_at_all_starts_not_ready_and_answers_503(
    world, gateway_processes, proxied
):
    proxy, url = proxied
    proxy.blackhole()
    [gateway] = gateway_processes(1, DATABASE_URL=url, ready=False, **_env())
    ready = httpx.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["checks"]["snapshot"] is False
    client = Client(gateway)
    with pytest.raises(openai.APIStatusError) as refused:
        openai.OpenAI(base_url=client.url, api_key=world["free"], max_retries=0).models.list()
    assert refused.value.status_code == 503
    assert refused.value.body["code"] == "governance_unavailable"
    assert client.chat(world["free"]) == 503
    assert max(client.delays) < STALL_BOUND
    mcp = httpx.post(
        gateway.url + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={
            "Authorization": f"Bearer {world['free']}",
            "Accept": "application/json, text/event-stream",
        },
        timeout=10,
    )
    assert mcp.status_code == 503 and mcp.json()["error"]["message"].startswith("Policies")

    proxy.restore()  # the poller loads a snapshot: ready, and serving
    gateway.wait_ready(timeout=20)
    assert client.chat(world["free"]) == 200
    request_ids = [*client.seen, refused.value.response.headers["x-request-id"]]
    _stored_exactly_once(request_ids, others=1)  # the MCP request's record
    assert RequestLog.objects.exclude(request_id__in=request_ids).get().status_code == 503


def test_a_crashed_writers_unsealed_tail_is_reported_then_sealed_by_the_next_writer(
    world, gateway_processes, gateway_factory
):
    env = _env(ODOCK_AUDIT_SEAL_SECONDS="3600")  # it never seals by itself
    [first] = gateway_processes(1, **env)
    client = Client(first)
    for _ in range(3):
        assert client.chat(world["free"]) == 200
    # Shipped from the writer's segment log to the database soon after (then it dies).
    deadline = time.monotonic() + 10
    while RequestLog.objects.count() < 3:
        assert time.monotonic() < deadline, "never shipped"
        time.sleep(0.05)
    _kill(first)

    report = chain_verify()
    assert report.ok and report.unsealed == 3
    [tail] = report.unsealed_tails
    assert (tail.first_seq, tail.last_seq) == (1, 3)
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert f"{tail.chain}: records #1–#3 not sealed" in out.getvalue()
    with pytest.raises(CommandError, match="not sealed"):
        call_command("audit_verify", "--max-unsealed-age", "0", stdout=StringIO())

    gateway_factory()  # its writer finds the dead one (its spool's lock is free): seals it
    deadline = time.monotonic() + 15
    while chain_verify().unsealed:
        assert time.monotonic() < deadline, "the dead writer's chain was never sealed"
        time.sleep(0.2)
    # Sealed: deleting the crashed writer's last record no longer goes unnoticed.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_requestlog DISABLE TRIGGER USER")
        cursor.execute("DELETE FROM audit_requestlog WHERE request_id = %s", [client.seen[-1]])
        cursor.execute("ALTER TABLE audit_requestlog ENABLE TRIGGER USER")
    report = chain_verify()
    assert not report.ok and "#3" in report.reason and "missing" in report.reason


def _bytes_read(pid: int) -> int:
    """Bytes the process read through read(2) and friends, files included (Linux)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/PID/io")


def test_the_spool_is_not_read_again_for_every_batch_while_the_database_is_away(
    world, gateway_processes, proxied, tmp_path
):
    proxy, url = proxied
    env = _env(ODOCK_DB_OUTAGE_GRACE_SECONDS="600")
    [gateway] = gateway_processes(1, DATABASE_URL=url, **env)
    client = Client(gateway)
    for _ in range(5):
        client.chat(world["free"])
    proxy.cut()  # refused: the writer spools at once
    client.chat(world["free"])
    before = _bytes_read(gateway.proc.pid)
    for _ in range(200):  # one at a time: a batch, and a spool append, per request
        assert client.chat(world["free"]) == 200
    read = _bytes_read(gateway.proc.pid) - before
    spooled = sum(p.stat().st_size for p in (tmp_path / "audit-spool").glob("*.seg"))
    assert spooled > 200 * 500  # the records are on disk
    # Reading the whole spool again for every batch read it ~100 times over (~50 MB here).
    assert read < 2 * spooled + 2_000_000, (read, spooled)
    proxy.restore()
    _stored_exactly_once(client.seen)


def _record(request_id: str, **fields) -> dict:
    """A record as the gateway's record stage makes one (no organisation)."""
    return {
        "request_id": request_id,
        "created_at": time.time(),
        "endpoint": "chat.completions",
        "stream": False,
        "status_code": 401,
        "error_code": "missing_api_key",
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "usage_estimated": False,
        "latency_ms": 0.4,
        "client_disconnected": False,
        "decisions": [["authenticate", "deny", "missing key"]],
        **fields,
    }


def test_a_record_refused_inside_the_copy_does_not_stop_the_writer(transactional_db, tmp_path):
    """psycopg's COPY raised its own exceptions, which the writer did not catch: its thread
    died and every later record waited in vain."""
    writer = RequestLogWriter(spool_dir=tmp_path / "spool", flush_seconds=0.01)
    writer.start()
    try:
        writer.submit(_record("good-1"))
        writer.submit(_record("bad", status_code=70_000))  # out of the column's range
        assert writer.flush(5)
        writer.submit(_record("good-2"))
        assert writer.flush(5)
        stored = set(RequestLog.objects.values_list("request_id", flat=True))
        assert stored == {"good-1", "good-2"}  # the refused one is logged, not retried forever
    finally:
        writer.stop()
