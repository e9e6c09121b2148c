"""The deployment list shows each deployment's circuit, error rate, latency and in-flight
requests as real gateways report them: in-process in the embedded mode, through Redis
(summed over gateway processes) otherwise."""

from __future__ import annotations

import contextlib
import re
import time

import openai
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from apps.gateway.breaker_state import LOCAL_HEALTH
from tests.factories import key_create, model_create, provider_create

URL = reverse("admin:providers_deployment_changelist")


def superuser_client() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def row_of(html: str, label: str) -> str:
    rows = re.findall(r"<tr[^>]*>.*?</tr>", html, re.S)
    [row] = [r for r in rows if label in r]
    return re.sub(r"<[^>]+>", " ", row)


def drive(gateway, secret: str, count: int) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    for _ in range(count):
        with contextlib.suppress(openai.APIStatusError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_embedded_mode_shows_this_process_gateway_figures(gateway_factory, fake_upstream, settings):
    settings.REDIS_URL = ""
    LOCAL_HEALTH.clear()
    model_create("m", provider_create(fake_upstream.url, name="solo"), upstream_model="m-up")
    issued = key_create()
    gateway = gateway_factory(routing_refresh_seconds=0.05)
    gateway.snapshots.reload()
    drive(gateway, issued.secret, 3)
    fake_upstream.behavior.fail_status = 500
    drive(gateway, issued.secret, 1)  # one failure (x3 attempts on the single deployment)
    time.sleep(0.4)  # a health report is published every 5th tick

    row = row_of(superuser_client().get(URL).content.decode(), "m-up")
    assert "closed" in row
    assert "50.0% of 6" in row  # 3 ok, 3 failed attempts in the last minute


def test_redis_mode_sums_processes_and_shows_an_open_circuit(
    gateway_factory, fake_upstream, settings, redis_url
):
    settings.REDIS_URL = redis_url
    model_create("m", provider_create(fake_upstream.url, name="solo"), upstream_model="m-up")
    issued = key_create()
    config = dict(
        redis_url=redis_url,
        routing_refresh_seconds=0.05,
        breaker_threshold=2,
        breaker_cooldown_seconds=60,
        max_attempts=1,
    )
    one, two = gateway_factory(**config), gateway_factory(**config)
    one.snapshots.reload()
    two.snapshots.reload()
    drive(one, issued.secret, 2)
    drive(two, issued.secret, 1)
    fake_upstream.behavior.fail_status = 500
    drive(one, issued.secret, 1)
    drive(two, issued.secret, 1)  # the second failure in the cluster: open
    time.sleep(0.4)

    row = row_of(superuser_client().get(URL).content.decode(), "m-up")
    assert "open" in row
    assert "40.0% of 5" in row  # both processes: 3 ok, 2 failed


@pytest.fixture(autouse=True)
def _clean_local_health():
    yield
    LOCAL_HEALTH.clear()
