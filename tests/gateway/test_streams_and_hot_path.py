"""Streams that end early, configuration reaching a running gateway, and the hot path's
promise of no database query per request."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import httpx
import openai
import pytest
from django.db.backends import utils as db_utils

from apps.keys.services import key_revoke
from apps.policies.models import Budget, RateLimit
from tests.factories import key_create, model_create, provider_create, records_wait

MESSAGES = [{"role": "user", "content": "stream me something long"}]


@pytest.fixture
def env(gateway, fake_upstream):
    model_create("alpha", provider_create(fake_upstream.url))
    issued = key_create()
    gateway.snapshots.reload()
    return gateway, fake_upstream, issued


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_client_disconnect_cancels_upstream_and_records_partial_usage(env):
    gateway, upstream, issued = env
    upstream.behavior.completion_tokens = 1000
    upstream.behavior.stream_chunk_delay_ms = 20  # a slow, long answer

    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={"model": "alpha", "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {issued.secret}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        received = 0
        for chunk in response.iter_bytes():
            received += chunk.count(b"data: ")
            if received >= 5:
                break  # leaving the block closes the connection mid-stream

    assert _wait_for(lambda: upstream.cancelled_streams == 1), "upstream stream was not cancelled"
    assert upstream.active_streams == 0
    [record] = records_wait(gateway, 1)
    assert record.client_disconnected
    assert record.usage_estimated
    assert 0 < record.output_tokens < 1000  # what was produced before the cut
    assert record.input_tokens > 0 and record.cost_usd > 0


def test_upstream_breaking_mid_stream_ends_with_an_error_event(env):
    gateway, upstream, issued = env
    upstream.behavior.completion_tokens = 50
    upstream.behavior.disconnect_after_chunks = 3
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)

    stream = client.chat.completions.create(model="alpha", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as err:
        for _chunk in stream:
            pass
    assert "stream" in str(err.value.message)  # an explicit error, not a clean-looking end
    [record] = records_wait(gateway, 1)
    assert record.status_code == 502 and record.error_code == "upstream_stream_broken"


def test_admin_change_reaches_running_gateway_within_two_seconds(gateway_factory, fake_upstream):
    gateway = gateway_factory(snapshot_poll_seconds=0.2)
    model_create("alpha", provider_create(fake_upstream.url))
    issued = key_create()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    # No manual reload: the gateway notices the config version moving.
    assert _wait_for(lambda: issued.key.digest in gateway.snapshots.current.keys_by_digest, 2.0)
    assert client.chat.completions.create(model="alpha", messages=MESSAGES).choices

    key_revoke(key=issued.key)
    revoked_at = time.monotonic()

    def refused() -> bool:
        try:
            client.models.list()
        except openai.AuthenticationError:
            return True
        return False

    assert _wait_for(refused, 2.0)
    assert time.monotonic() - revoked_at < 2.0


def test_hot_path_makes_no_database_query(env, monkeypatch):
    """Count every SQL statement by thread: only the record writer, the snapshot loader
    and the alert sender may touch the database, never the thread serving requests —
    with budgets and rate limits on at every level."""
    gateway, _upstream, issued = env
    key = issued.key
    for field, obj in (
        ("organization", key.project.team.organization),
        ("team", key.project.team),
        ("project", key.project),
        ("key", key),
    ):
        Budget.objects.create(
            **{field: obj}, limit_usd=Decimal("1000"), period="daily", alert_thresholds=[1]
        )
        RateLimit.objects.create(**{field: obj}, rpm=100_000, tpm=10_000_000, max_concurrency=50)
    gateway.snapshots.reload()
    seen: list[str] = []
    original = db_utils.CursorWrapper._execute

    def counting(self, sql, params, *ignored):
        seen.append(threading.current_thread().name)
        return original(self, sql, params, *ignored)

    monkeypatch.setattr(db_utils.CursorWrapper, "_execute", counting)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0)
    for _ in range(100):
        client.chat.completions.create(model="alpha", messages=MESSAGES)
    for _ in range(20):
        list(client.chat.completions.create(model="alpha", messages=MESSAGES, stream=True))
    client.models.list()
    assert len(records_wait(gateway, 121)) == 121
    writer_or_loader = [
        n
        for n in seen
        if n.startswith(
            (
                "odock-audit-writer",
                "odock-audit-shipper",
                "odock-audit-watchdog",
                "odock-snapshot",
                "odock-alerts",
            )
        )
    ]
    others = [n for n in seen if n not in writer_or_loader and n != threading.main_thread().name]
    assert others == [], f"queries from request-serving threads: {set(others)}"
    assert len(writer_or_loader) > 0  # the counter works: the writer's inserts were seen
