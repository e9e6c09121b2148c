"""Fixtures for the reports tests: two organisations of keys, and seeded random request
logs with an independent oracle (sums computed here in Python from the rows written)."""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from apps.audit.models import RequestLog
from apps.keys.models import VirtualKey
from apps.reports.histogram import bucket_of, histogram_empty
from apps.tenancy.models import Organization
from tests.factories import key_create, org_create, project_create, team_create

_ids = itertools.count(1)
MODELS = ("gpt-4o-mini", "claude-haiku", '=HYPERLINK("http://x")')
PROVIDERS = ("openai-main", "claude-main")
END_USERS = ("", "", "cust-1", "cust-2@example.com")
STATUSES = (200, 200, 200, 200, 400, 401, 429, 500, 502)
# A window of days around a month boundary, away from "now" so nothing is current.
BASE = datetime(2026, 2, 26, tzinfo=UTC)


@dataclass
class Tenants:
    acme: Organization
    globex: Organization
    keys: list[VirtualKey]  # acme's first, then globex's

    def keys_of(self, org: Organization) -> list[VirtualKey]:
        return [k for k in self.keys if k.project.team.organization_id == org.pk]


@pytest.fixture
def tenants(db) -> Tenants:
    """acme: two teams, three projects, five keys; globex: one team, two keys."""
    acme, globex = org_create("acme"), org_create("globex")
    search, ops = team_create(acme, "search"), team_create(acme, "ops")
    lab = team_create(globex, "lab")
    projects = [
        project_create(search, "assistant"),
        project_create(search, "indexer"),
        project_create(ops, "oncall"),
        project_create(lab, "notebook"),
    ]
    alice = get_user_model().objects.create_user("alice")
    bob = get_user_model().objects.create_user("bob")
    keys = [
        key_create(projects[0], "prod", owner=alice).key,
        key_create(projects[0], "staging", owner=bob).key,
        key_create(projects[1], "batch").key,
        key_create(projects[2], "pager").key,
        key_create(projects[2], "bot").key,
        key_create(projects[3], "nb-1", owner=alice).key,  # alice works in both
        key_create(projects[3], "nb-2").key,
    ]
    for key in keys:  # the hierarchy the rows name, loaded once
        key.project.team.organization  # noqa: B018
    return Tenants(acme, globex, keys)


def log_row(
    key: VirtualKey | None,
    created_at: datetime,
    *,
    cost: Decimal = Decimal("0.001"),
    status: int = 200,
    model: str = "gpt-4o-mini",
    provider: str = "openai-main",
    tokens: tuple[int, int, int] = (10, 5, 0),
    latency_ms: float = 100.0,
    pk: int | None = None,
    end_user: str = "",
) -> RequestLog:
    """An unsaved request record as the gateway's writer stores it (no key: a 401)."""
    project = key.project if key is not None else None
    return RequestLog(
        id=pk,
        request_id=f"rep-{next(_ids)}-{random.getrandbits(32):08x}",
        created_at=created_at,
        organization_id=project.team.organization_id if project else None,
        team_id=project.team_id if project else None,
        project_id=project.pk if project else None,
        key_id=key.pk if key else None,
        key_prefix=key.prefix if key else "",
        user_id=key.owner_id if key else None,
        end_user=end_user,
        endpoint="chat.completions",
        model_requested=model,
        provider=provider if status < 400 or status >= 500 else "",
        status_code=status,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cached_tokens=tokens[2],
        cost_usd=cost,
        latency_ms=latency_ms,
    )


def random_rows(
    tenants: Tenants,
    rng: random.Random,
    count: int,
    *,
    start: datetime = BASE,
    hours: int = 96,
) -> list[RequestLog]:
    """Random requests over ``hours`` hours from ``start`` (the default spans the end of
    February into March), from every key and some with no key at all."""
    rows = []
    for _ in range(count):
        key = rng.choice([*tenants.keys, None]) if rng.random() < 0.97 else None
        status = rng.choice(STATUSES) if key is not None else 401
        created = start + timedelta(seconds=rng.uniform(0, hours * 3600))
        billed = status == 200
        rows.append(
            log_row(
                key,
                created,
                # 9 decimals: totals stay within a spreadsheet double's 15 digits.
                cost=Decimal(rng.randint(0, 50_000_000)) / 10**9 if billed else Decimal(0),
                status=status,
                model=rng.choice(MODELS),
                provider=rng.choice(PROVIDERS),
                tokens=(rng.randint(0, 4000), rng.randint(0, 2000), rng.randint(0, 500))
                if billed
                else (0, 0, 0),
                latency_ms=math.exp(rng.uniform(math.log(0.2), math.log(120_000))),
                end_user=rng.choice(END_USERS) if key is not None else "",
            )
        )
    # Exactly on hour, day and month boundaries.
    rows += [
        log_row(tenants.keys[0], datetime(2026, 3, 1, tzinfo=UTC), cost=Decimal("0.25")),
        log_row(
            tenants.keys[0],
            datetime(2026, 3, 1, tzinfo=UTC) - timedelta(microseconds=1),
            cost=Decimal("0.125"),
        ),
    ]
    return rows


def insert(rows: Iterable[RequestLog]) -> list[RequestLog]:
    """Insert as the audit writer does: batched, no per-row round trip."""
    return RequestLog.objects.bulk_create(list(rows), batch_size=500)


DIMS = (
    "organization_id",
    "team_id",
    "project_id",
    "key_id",
    "model_requested",
    "provider",
    "user_id",
    "end_user",
)


def hour_of(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Agg:
    requests: int = 0
    errors: int = 0
    refusals: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms_sum: float = 0.0
    histogram: list[int] = field(default_factory=histogram_empty)

    def add(self, row: RequestLog) -> None:
        self.requests += 1
        self.errors += row.status_code >= 500
        self.refusals += 400 <= row.status_code < 500
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cached_tokens += row.cached_tokens
        self.cost_usd += row.cost_usd
        self.latency_ms_sum += row.latency_ms
        self.histogram[bucket_of(row.latency_ms)] += 1


def oracle(rows: Iterable[RequestLog], key: Callable[[RequestLog], Any]) -> dict[Any, Agg]:
    """Aggregates of ``rows`` grouped by ``key(row)``, computed without the database."""
    out: dict[Any, Agg] = defaultdict(Agg)
    for row in rows:
        out[key(row)].add(row)
    return dict(out)


def rollup_key(row: RequestLog) -> tuple:
    return (hour_of(row.created_at), *(getattr(row, d) for d in DIMS))


def total(rows: Iterable[RequestLog]) -> Agg:
    agg = Agg()
    for row in rows:
        agg.add(row)
    return agg
