"""Seeded roll-ups (created directly, as the roll-up job would) and users of every kind."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.identity.models import Membership, Role
from apps.reports.histogram import bucket_of, histogram_empty
from apps.reports.models import UsageRollup
from apps.tenancy.models import Organization, Team
from tests.conftest import ServerThread
from tests.factories import key_create, org_create, project_create, team_create

_seq = itertools.count(1)


def histogram(**latencies: int) -> list[int]:
    """``histogram(ms100=8, ms1000=2)``: 8 requests at 100 ms, 2 at 1 s."""
    h = histogram_empty()
    for name, n in latencies.items():
        h[bucket_of(float(name.removeprefix("ms")))] += n
    return h


def rollup(hour: datetime, key: Any, *, model: str, cost: str, requests: int, **extra: Any):
    """One roll-up row of ``key`` (its project, team and org filled in)."""
    project = key.project
    latencies = extra.pop("latency", None) or histogram(ms100=requests)
    return UsageRollup.objects.create(
        hour=hour,
        organization_id=project.team.organization_id,
        team_id=project.team_id,
        project_id=project.pk,
        key_id=key.pk,
        model_requested=model,
        provider="openai-main",
        requests=requests,
        cost_usd=Decimal(cost),
        latency_histogram=latencies,
        latency_ms_sum=float(extra.pop("latency_sum", 100.0 * requests)),
        computed_at=timezone.now(),
        **extra,
    )


def finding_log(org: Organization, finding_types: str, *, minutes_ago: int = 5) -> RequestLog:
    return RequestLog.objects.create(
        request_id=f"req-dash-{next(_seq)}",
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        organization_id=org.pk,
        endpoint="chat.completions",
        model_requested="gpt-4o-mini",
        status_code=400 if finding_types else 200,
        finding_types=finding_types,
    )


def current_hour() -> datetime:
    return timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Seeded:
    acme: Organization
    globex: Organization
    search: Team
    ads: Team
    other: Team
    keys: dict[str, Any]
    h1: datetime  # one hour ago
    h3: datetime  # three hours ago
    rows: dict[str, UsageRollup] = field(default_factory=dict)


@pytest.fixture
def seeded(db) -> Seeded:
    """acme: teams search (keys k1, k2) and ads (k3); globex: team other (k4).

    In the last 24 h: acme spends 1.50 + 0.25 + 3.00, globex 10.00; acme also spent 2.00
    three days ago (7 d and 30 d only) and 100.00 forty days ago (in no range)."""
    acme, globex = org_create("acme"), org_create("globex")
    search, ads, other = (
        team_create(acme, "search"),
        team_create(acme, "ads"),
        team_create(globex, "other"),
    )
    keys = {
        "k1": key_create(project_create(search), "assistant-prod").key,
        "k2": key_create(project_create(search), "assistant-dev").key,
        "k3": key_create(project_create(ads), "ads-bidder").key,
        "k4": key_create(project_create(other), "globex-bot").key,
    }
    now = current_hour()
    h1, h3 = now - timedelta(hours=1), now - timedelta(hours=3)
    s = Seeded(acme, globex, search, ads, other, keys, h1, h3)
    s.rows["a"] = rollup(
        h1,
        keys["k1"],
        model="gpt-4o-mini",
        cost="1.5",
        requests=10,
        errors=1,
        refusals=2,
        latency=histogram(ms100=8, ms1000=2),
    )
    s.rows["b"] = rollup(
        h1,
        keys["k2"],
        model="claude-haiku",
        cost="0.25",
        requests=5,
        refusals=1,
        latency=histogram(ms200=5),
    )
    s.rows["c"] = rollup(
        h3,
        keys["k3"],
        model="gpt-4o-mini",
        cost="3",
        requests=20,
        errors=2,
        latency=histogram(ms50=20),
    )
    s.rows["d"] = rollup(h3, keys["k4"], model="gpt-4o-mini", cost="10", requests=4, errors=4)
    s.rows["e"] = rollup(
        now - timedelta(days=3), keys["k1"], model="gpt-4o-mini", cost="2", requests=3
    )
    s.rows["f"] = rollup(
        now - timedelta(days=40), keys["k1"], model="gpt-4o-mini", cost="100", requests=50
    )
    return s


def make_user(
    username: str,
    *,
    staff: bool,
    superuser: bool = False,
    role: str | None = None,
    organization: Organization | None = None,
    team: Team | None = None,
) -> User:
    """A user, with a membership when ``role`` is given (at ``organization`` or ``team``;
    a platform admin at neither)."""
    user = User.objects.create_user(username, password="pw-dash-123456")
    user.is_staff, user.is_superuser = staff, superuser
    user.save()
    if role is not None:
        Membership.objects.create(user=user, role=role, organization=organization, team=team)
    return user


@pytest.fixture
def staff_client(client):
    client.force_login(make_user("staffer", staff=True, role=Role.PLATFORM_ADMIN))
    return client


@pytest.fixture
def live_site(transactional_db, monkeypatch) -> Iterator[str]:
    """The production ASGI stack (gateway, Django, static files, websockets) on loopback."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application
    from django.db import connections

    # Django runs each ASGI request's sync code in a fresh thread; with persistent
    # connections every one would keep its own open past the test (and block the test
    # database's teardown). The settings dict is shared by every thread's connection.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)

    from odock.asgi_router import build_application
    from odock.gateway import build_gateway

    gateway = build_gateway()
    server = ServerThread(
        build_application(gateway, ASGIStaticFilesHandler(get_asgi_application()))
    ).start()
    yield server.url
    server.stop()
