"""Querying the audit log: the shared filters (apps.audit.selectors), keyset pages, and the
admin change list — correct on varied data, and fast on a large table (no COUNT, a fixed
number of queries, indexes used)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.audit.admin import RequestLogAdmin
from apps.audit.models import RequestLog
from apps.audit.selectors import (
    AuditFilter,
    Position,
    audit_filter_parse,
    parse_instant,
    request_log_chunks,
    request_log_page,
    request_log_search,
)
from apps.keys.models import VirtualKey
from apps.tenancy.models import Organization, Project, Team
from tests.factories import key_create, org_create, project_create, team_create

CHANGELIST_URL = reverse("admin:audit_requestlog_changelist")
EXPORT_URL = reverse("admin:audit_requestlog_export")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

_ids = itertools.count(1)


def log(**fields: Any) -> RequestLog:
    """One record with plausible defaults; hierarchy ids follow the key when one is given."""
    key = fields.pop("key", None)
    if key is not None:
        fields.setdefault("key_id", key.pk)
        fields.setdefault("key_prefix", key.prefix)
        fields.setdefault("project_id", key.project_id)
        fields.setdefault("team_id", key.project.team_id)
        fields.setdefault("organization_id", key.project.team.organization_id)
    fields.setdefault("request_id", f"req-q{next(_ids):05d}")
    fields.setdefault("created_at", timezone.now())
    fields.setdefault("endpoint", "chat.completions")
    fields.setdefault("status_code", 200)
    return RequestLog.objects.create(**fields)


@dataclass
class Data:
    acme: Organization
    globex: Organization
    acme_search: Team
    acme_ads: Team
    globex_search: Team
    assistant: Project  # acme/search/assistant
    ads_assistant: Project  # acme/ads/assistant: same project name, other team
    lab: Project
    prod: VirtualKey  # acme/search/assistant/prod
    staging: VirtualKey
    ads_prod: VirtualKey  # same key name, other team
    globex_prod: VirtualKey  # same key name, other organisation
    rows: list[RequestLog]
    old: RequestLog  # older than the admin's default window


STATUSES = (200, 200, 400, 401, 403, 429, 500, 502, 503)
ERROR_CODES = {400: "invalid_request", 401: "invalid_key", 403: "model_not_allowed"}
ERROR_CODES |= {429: "rate_limited", 500: "internal", 502: "upstream_error", 503: "unavailable"}
MODELS = ("gpt-4o-mini", "claude-3-5-haiku", "text-embedding-3-small")
PROVIDERS = ("openai-main", "claude-main", "")
FINDINGS = ("", "pii", "pii,secrets", "pii_email", "prompt_injection,secrets", "jailbreak,pii,x")
COSTS = ("0", "0.000150000000", "0.012", "0.5", "1.25", "3")


@pytest.fixture
def data(db) -> Data:
    acme, globex = org_create("acme"), org_create("globex")
    acme_search, acme_ads = team_create(acme, "search"), team_create(acme, "ads")
    globex_search = team_create(globex, "search")  # same team name, other organisation
    assistant = project_create(acme_search, "assistant")
    ads_assistant = project_create(acme_ads, "assistant")
    lab = project_create(globex_search, "lab")
    prod = key_create(assistant, "prod").key
    staging = key_create(assistant, "staging").key
    ads_prod = key_create(ads_assistant, "prod").key
    globex_prod = key_create(lab, "prod").key
    keys = (prod, staging, ads_prod, globex_prod)
    now = timezone.now()
    rows = []
    for i in range(40):
        status = STATUSES[i % len(STATUSES)]
        rows.append(
            log(
                key=keys[i % len(keys)],
                # 30 minutes apart, and every fifth pair shares a timestamp.
                created_at=now - timedelta(minutes=30 * (i - i % 5 // 4)),
                endpoint="embeddings" if i % 7 == 0 else "chat.completions",
                stream=i % 3 == 0,
                model_requested=MODELS[i % len(MODELS)],
                provider=PROVIDERS[i % len(PROVIDERS)],
                status_code=status,
                error_code=ERROR_CODES.get(status, ""),
                finding_types=FINDINGS[i % len(FINDINGS)],
                cost_usd=Decimal(COSTS[i % len(COSTS)]),
            )
        )
    old = log(key=prod, created_at=now - timedelta(days=3), status_code=500, provider="old-one")
    return Data(
        acme,
        globex,
        acme_search,
        acme_ads,
        globex_search,
        assistant,
        ads_assistant,
        lab,
        prod,
        staging,
        ads_prod,
        globex_prod,
        rows,
        old,
    )


def ids(qs) -> set[str]:
    return set(qs.values_list("request_id", flat=True))


def expect(data: Data, predicate) -> set[str]:
    return {r.request_id for r in [*data.rows, data.old] if predicate(r)}


def search(params: dict[str, Any], *, organization_id: int | None = None) -> set[str]:
    filters = audit_filter_parse(params)
    return ids(request_log_search(filters=filters, organization_id=organization_id))


def has_finding(row: RequestLog, name: str) -> bool:
    return name in row.finding_types.split(",")


# name -> (params, predicate); params may be a function of the data (ids, prefixes).
CASES = {
    "org by name": ({"org": "acme"}, lambda d, r: r.organization_id == d.acme.pk),
    "org by id": (
        lambda d: {"org": str(d.globex.pk)},
        lambda d, r: r.organization_id == d.globex.pk,
    ),
    "team name in every org": (
        {"team": "search"},
        lambda d, r: r.team_id in (d.acme_search.pk, d.globex_search.pk),
    ),
    "team name within an org": (
        {"org": "acme", "team": "search"},
        lambda d, r: r.team_id == d.acme_search.pk,
    ),
    "project name under a team": (
        {"org": "acme", "team": "ads", "project": "assistant"},
        lambda d, r: r.project_id == d.ads_assistant.pk,
    ),
    "project name everywhere": (
        {"project": "assistant"},
        lambda d, r: r.project_id in (d.assistant.pk, d.ads_assistant.pk),
    ),
    "key name": (
        {"key": "prod"},
        lambda d, r: r.key_id in (d.prod.pk, d.ads_prod.pk, d.globex_prod.pk),
    ),
    "key name within a project": (
        {"org": "acme", "team": "search", "project": "assistant", "key": "prod"},
        lambda d, r: r.key_id == d.prod.pk,
    ),
    "key by id": (lambda d: {"key": str(d.staging.pk)}, lambda d, r: r.key_id == d.staging.pk),
    "key by prefix": (lambda d: {"key": d.ads_prod.prefix}, lambda d, r: r.key_id == d.ads_prod.pk),
    "model": ({"model": "claude-3-5-haiku"}, lambda d, r: r.model_requested == "claude-3-5-haiku"),
    "provider": ({"provider": "claude-main"}, lambda d, r: r.provider == "claude-main"),
    "status class": ({"status": "4xx"}, lambda d, r: 400 <= r.status_code < 500),
    "status class upper case": ({"status": "5XX"}, lambda d, r: 500 <= r.status_code < 600),
    "status code": ({"status": "429"}, lambda d, r: r.status_code == 429),
    "error code": ({"error_code": "upstream_error"}, lambda d, r: r.error_code == "upstream_error"),
    "finding, whole names only": ({"finding": "pii"}, lambda d, r: has_finding(r, "pii")),
    "finding last in the list": ({"finding": "secrets"}, lambda d, r: has_finding(r, "secrets")),
    "finding alone": ({"finding": "pii_email"}, lambda d, r: has_finding(r, "pii_email")),
    "cost range": (
        {"cost_min": "0.012", "cost_max": "1.25"},
        lambda d, r: Decimal("0.012") <= r.cost_usd <= Decimal("1.25"),
    ),
    "cost minimum": ({"cost_min": "0.5"}, lambda d, r: r.cost_usd >= Decimal("0.5")),
    "endpoint": ({"endpoint": "embeddings"}, lambda d, r: r.endpoint == "embeddings"),
    "stream": ({"stream": "true"}, lambda d, r: r.stream),
    "not stream": ({"stream": "false"}, lambda d, r: not r.stream),
    "relative from": (
        {"from": "6h"},
        lambda d, r: r.created_at >= timezone.now() - timedelta(hours=6),
    ),
    "combined": (
        {"org": "acme", "status": "5xx", "model": "gpt-4o-mini"},
        lambda d, r: (
            r.organization_id == d.acme.pk
            and r.status_code >= 500
            and r.model_requested == "gpt-4o-mini"
        ),
    ),
    "nothing matches": ({"team": "no-such-team"}, lambda d, r: False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_filter_selects_exactly_the_matching_records(data, case):
    params, predicate = CASES[case]
    params = params(data) if callable(params) else params
    expected = expect(data, lambda r: predicate(data, r))

    assert search(params) == expected
    if case != "nothing matches":
        assert expected, "the case should select something"
        assert len(expected) < len(data.rows) + 1 - 2, "the case should leave rows out"


def test_time_range_bounds(data):
    a, b = data.rows[10].created_at, data.rows[20].created_at  # b is older
    got = search({"from": b.isoformat(), "to": a.isoformat()})
    assert got == expect(data, lambda r: b <= r.created_at < a)  # from inclusive, to exclusive
    # A bare date as "to" includes that whole day; as "from", starts at its midnight.
    day = data.old.created_at.date().isoformat()
    assert data.old.request_id in search({"from": day, "to": day})
    next_day = (data.old.created_at.date() + timedelta(days=1)).isoformat()
    assert data.old.request_id not in search({"from": next_day})


def test_an_empty_range_matches_nothing_without_reading_the_log(data):
    """Not an error: "from" at or after "to", or cost_min above cost_max, selects no row
    (every combination of valid values is a valid filter)."""
    a = data.rows[10].created_at.isoformat()
    for params in (
        {"from": a, "to": a},
        {"from": "2026-03-02", "to": "2026-03-01"},
        {"cost_min": "2", "cost_max": "1"},
    ):
        filters = audit_filter_parse(params)
        assert filters.is_empty_range()
        with CaptureQueriesContext(connection) as queries:
            assert search(params) == set()
        assert not [q for q in queries if "audit_requestlog" in q["sql"]]


def test_times_beyond_what_python_holds_are_clamped():
    """A duration or an offset reaching past year 1 or 9999 is the edge of time, not a 500."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_instant("999999w", now=now) == datetime.min.replace(tzinfo=UTC)
    assert parse_instant("9999-12-31", now=now, end_of_day=True) == datetime.max.replace(tzinfo=UTC)
    assert parse_instant("0001-01-01T00:00:00+05:00", now=now) == datetime.min.replace(tzinfo=UTC)
    assert parse_instant("9999-12-31T23:00:00-05:00", now=now) == datetime.max.replace(tzinfo=UTC)
    far = audit_filter_parse({"to": "0001-01-01"}, default_window=timedelta(hours=24))
    assert far.created_from == datetime.min.replace(tzinfo=UTC)


def test_parse_instant_forms():
    assert parse_instant("2026-03-10T08:00:00Z", now=NOW) == datetime(2026, 3, 10, 8, tzinfo=UTC)
    assert parse_instant("2026-03-10T08:00", now=NOW) == datetime(2026, 3, 10, 8, tzinfo=UTC)
    # "+01:00" whose "+" a query string turned into a space
    assert parse_instant("2026-03-10T09:00:00 01:00", now=NOW) == datetime(
        2026, 3, 10, 8, tzinfo=UTC
    )
    assert parse_instant("2026-03-10", now=NOW) == datetime(2026, 3, 10, tzinfo=UTC)
    assert parse_instant("2026-03-10", now=NOW, end_of_day=True) == datetime(
        2026, 3, 11, tzinfo=UTC
    )
    assert parse_instant("90m", now=NOW) == NOW - timedelta(minutes=90)
    assert parse_instant("7d", now=NOW) == NOW - timedelta(days=7)
    assert parse_instant("2w", now=NOW) == NOW - timedelta(weeks=2)
    with pytest.raises(ValueError):
        parse_instant("yesterday", now=NOW)


def test_default_window_and_empty_values():
    parsed = audit_filter_parse(
        {"org": "  ", "status": ""}, default_window=timedelta(hours=24), now=NOW
    )
    assert parsed == AuditFilter(created_from=NOW - timedelta(hours=24))
    until = audit_filter_parse({"to": "2026-03-01T00:00:00Z"}, default_window=timedelta(hours=1))
    assert until.created_from == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert audit_filter_parse({}) == AuditFilter()  # the API: no window implied


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "6xx"}, "status"),
        ({"status": "abc"}, "status"),
        ({"status": "42"}, "status"),
        ({"cost_min": "-1"}, "cost_min"),
        ({"cost_max": "lots"}, "cost_max"),
        ({"cost_min": "NaN"}, "cost_min"),
        ({"from": "yesterday"}, "from"),
        ({"finding": "pii,secrets"}, "finding"),
        ({"stream": "maybe"}, "stream"),
        ({"model": "m" * 301}, "model"),
    ],
)
def test_invalid_values_are_named(params, field):
    with pytest.raises(ValidationError) as exc:
        audit_filter_parse(params)
    assert field in exc.value.message_dict


def test_several_errors_reported_at_once():
    with pytest.raises(ValidationError) as exc:
        audit_filter_parse({"status": "x", "cost_min": "y", "from": "z"})
    assert set(exc.value.message_dict) == {"status", "cost_min", "from"}


# --- scoping ---------------------------------------------------------------------------


def test_scope_limits_rows_to_the_organisation(data):
    acme_rows = expect(data, lambda r: r.organization_id == data.acme.pk)
    assert search({}, organization_id=data.acme.pk) == acme_rows
    assert search({"org": "acme"}, organization_id=data.acme.pk) == acme_rows
    assert search({"org": str(data.acme.pk)}, organization_id=data.acme.pk) == acme_rows
    # the same team name exists in globex: the scope keeps only acme's
    assert search({"team": "search"}, organization_id=data.acme.pk) == expect(
        data, lambda r: r.team_id == data.acme_search.pk
    )


@pytest.mark.parametrize("org", ["globex", "no-such-org", "999999"])
def test_scope_cannot_be_widened_by_naming_another_org(data, org):
    with pytest.raises(PermissionDenied):
        search({"org": org}, organization_id=data.acme.pk)


def test_other_organisations_levels_match_nothing_in_scope(data):
    scope = data.acme.pk
    assert search({"key": str(data.globex_prod.pk)}, organization_id=scope) == set()
    assert search({"key": data.globex_prod.prefix}, organization_id=scope) == set()
    assert search({"project": "lab"}, organization_id=scope) == set()
    assert search({"team": str(data.globex_search.pk)}, organization_id=scope) == set()


def test_names_resolve_on_small_tables_then_filter_by_id(data):
    filters = audit_filter_parse({"org": "acme", "team": "search", "key": "prod"})
    with CaptureQueriesContext(connection) as queries:
        qs = request_log_search(filters=filters)
    assert len(queries) == 3  # one per named level; the log is not read yet
    assert all("audit_requestlog" not in q["sql"] for q in queries)
    sql = str(qs.query)
    assert f'key_id" IN ({data.prod.pk})' in sql and "JOIN" not in sql
    with CaptureQueriesContext(connection) as queries:
        assert request_log_search(filters=audit_filter_parse({"key": "nope"})).count() == 0
    assert all("audit_requestlog" not in q["sql"] for q in queries)  # empty: log untouched


# --- keyset pagination -------------------------------------------------------------------


def test_keyset_pages_return_every_row_once_in_order_despite_equal_times(db):
    same = timezone.now().replace(microsecond=0)
    for i in range(17):  # 17 rows on three timestamps, most of them shared
        log(created_at=same - timedelta(seconds=i // 8))
    everything = list(
        RequestLog.objects.order_by("-created_at", "-id").values_list("request_id", flat=True)
    )
    seen: list[str] = []
    position: Position | None = None
    pages = 0
    while True:
        rows, position = request_log_page(
            request_log_search(filters=AuditFilter()), after=position, limit=3
        )
        seen += [r.request_id for r in rows]
        pages += 1
        if position is None:
            break
    assert seen == everything and len(set(seen)) == 17
    assert pages == 6
    assert request_log_page(RequestLog.objects.all(), after=None, limit=17)[1] is None


def test_keyset_chunks_cover_the_filtered_set_once(data):
    qs = request_log_search(filters=audit_filter_parse({"org": "acme"}))
    chunks = list(request_log_chunks(qs, columns=("request_id",), chunk_size=4))
    flat = [row[0] for chunk in chunks for row in chunk]
    assert flat == list(qs.values_list("request_id", flat=True))
    assert all(len(c) == 4 for c in chunks[:-1]) and all(len(row) == 1 for row in chunks[0])


# --- the admin change list ---------------------------------------------------------------


@pytest.fixture
def admin_client(db) -> Client:
    """A logged-in superuser without a password (hashing one costs ~0.3 s per test)."""
    client = Client()
    client.force_login(User.objects.create(username="root", is_staff=True, is_superuser=True))
    return client


def listed(client: Client, query: str = "") -> set[str]:
    response = client.get(CHANGELIST_URL + query)
    assert response.status_code == 200, response
    return {row.request_id for row in response.context["cl"].result_list}


@pytest.fixture
def big_pages(monkeypatch):
    monkeypatch.setattr(RequestLogAdmin, "list_per_page", 500)


@pytest.mark.parametrize(
    "case",
    [
        "org by name",
        "team name within an org",
        "key by prefix",
        "status class",
        "finding, whole names only",
        "cost range",
        "provider",
        "error code",
        "model",
        "stream",
        "combined",
        "nothing matches",
    ],
)
def test_admin_filters_match_the_selector(admin_client, data, big_pages, case):
    params, predicate = CASES[case]
    params = params(data) if callable(params) else params
    query = "?" + urlencode(params)
    in_window = timezone.now() - timedelta(hours=24)
    expected = expect(data, lambda r: predicate(data, r) and r.created_at >= in_window)
    assert listed(admin_client, query) == expected


def test_admin_shows_the_last_24_hours_unless_asked(admin_client, data, big_pages):
    recent = {r.request_id for r in data.rows}
    assert listed(admin_client) == recent
    assert listed(admin_client, "?from=7d") == recent | {data.old.request_id}
    # an exact request id is found at any age (unique index)
    assert listed(admin_client, f"?q={data.old.request_id}") == {data.old.request_id}
    # a key-prefix search keeps the window
    assert data.old.request_id not in listed(admin_client, f"?q={data.prod.prefix}")


def test_admin_filter_form_and_export_links_carry_the_filters(admin_client, data):
    page = admin_client.get(
        CHANGELIST_URL + "?org=acme&status=5xx&endpoint=embeddings"
    ).content.decode()
    assert 'name="org" value="acme"' in page and 'name="status" value="5xx"' in page
    assert 'name="team" value=""' in page
    assert page.count('name="org"') == 1  # not repeated as a hidden field
    assert 'type="hidden" name="endpoint" value="embeddings"' in page
    assert (
        f'href="{EXPORT_URL}?org=acme&amp;status=5xx&amp;endpoint=embeddings&amp;format=csv"'
        in page
    )
    assert "format=jsonl" in page
    assert "Status: 5xx" in page  # the active filter, with a link that removes it


def test_admin_drops_invalid_and_empty_values_with_a_message(admin_client, data):
    response = admin_client.get(CHANGELIST_URL + "?org=acme&status=6xx&team=&cost_min=x")
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST_URL}?org=acme"
    page = admin_client.get(response["Location"]).content.decode()
    assert "Status: give a class" in page and "Cost ≥: give a non-negative" in page


def test_admin_keeps_the_last_of_repeated_values(admin_client, data):
    response = admin_client.get(CHANGELIST_URL + "?org=globex&org=acme&p=2")
    assert response.status_code == 302 and response["Location"] == f"{CHANGELIST_URL}?org=acme"


def test_admin_change_view_is_readable_and_escaped(admin_client, data):
    record = log(
        key=data.prod,
        decisions=[["authenticate", "allow", ""], ["inspect", "block", "pii found"]],
        attempts=[
            ["openai-main:gpt-4o-mini", 502, "upstream_error", 12.5],
            ["claude-main:x", 200, "", 8.0],
        ],
        findings=[{"detector": "pii", "action": "block", "stage": "inspect"}],
        finding_types="pii",
        content={
            "mode": "full",
            "request": "<script>alert(1)</script>",
            "request_truncated": False,
            "response": "fine",
            "response_truncated": True,
        },
        chain="w1-acme",
        seq=7,
        prev_hash="a" * 64,
        hash="b" * 64,
    )
    page = admin_client.get(
        reverse("admin:audit_requestlog_change", args=[record.pk])
    ).content.decode()
    assert "<td>inspect</td><td>block</td><td>pii found</td>" in page
    assert (
        "<td>openai-main:gpt-4o-mini</td><td>502</td><td>upstream_error</td><td>12.5</td>" in page
    )
    assert "<td>pii</td><td>block</td><td>inspect</td>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "Response (truncated)" in page
    assert f"<code>{'a' * 64}</code>" in page and f"<code>{'b' * 64}</code>" in page
    assert "w1-acme" in page
    assert f"key {data.prod.pk}" in page
    assert 'name="_save"' not in page


def test_admin_export_is_for_auditors_and_holds_only_their_records(client, admin_client, data):
    from apps.identity.models import Membership, Role

    url = EXPORT_URL + "?format=csv"
    assert client.get(url).status_code == 302  # anonymous: to the login page
    user = User.objects.create(username="clerk", is_staff=True)
    client.force_login(user)
    assert client.get(url).status_code == 302  # staff without a role: no admin
    Membership.objects.create(user=user, role=Role.FINANCE, organization=data.acme)
    assert client.get(url).status_code == 403  # finance: no audit capability
    Membership.objects.create(user=user, role=Role.AUDITOR, team=data.acme_search)
    body = b"".join(client.get(url).streaming_content).decode()
    exported = {line.split(",")[1] for line in body.splitlines()[1:]}
    expected = set(
        RequestLog.objects.filter(
            team=data.acme_search, created_at__gte=timezone.now() - timedelta(days=1)
        ).values_list("request_id", flat=True)
    )
    assert exported == expected and expected  # the team's records, nothing else
    assert admin_client.get(EXPORT_URL + "?format=xml").status_code == 400
    assert admin_client.get(EXPORT_URL + "?status=6xx").status_code == 400


# --- at scale: 100,000 rows --------------------------------------------------------------

BULK_ROWS = 100_000

# Column expressions for generate_series(1, n) AS g; the rest take the model's default.
BULK_SQL = {
    "request_id": "'bulk-' || g",
    "created_at": "{now} - g * interval '50 seconds'",  # ~58 days, ~1,700 rows a day
    "organization_id": "({orgs})[1 + g %% 2]",
    "team_id": "({teams})[1 + g %% 2]",
    "project_id": "({projects})[1 + g %% 2]",
    "key_id": "({keys})[1 + g %% 2]",
    "endpoint": "CASE WHEN g %% 10 = 0 THEN 'embeddings' ELSE 'chat.completions' END",
    "model_requested": (
        "(ARRAY['gpt-4o-mini','claude-3-5-haiku','text-embedding-3-small'])[1 + g %% 3]"
    ),
    "provider": "(ARRAY['openai-main','claude-main'])[1 + g %% 2]",
    "status_code": "(ARRAY[200,200,200,400,401,403,429,500,502])[1 + g %% 9]",
    "error_code": "CASE g %% 9 WHEN 6 THEN 'rate_limited' WHEN 8 THEN 'upstream_error' ELSE '' END",
    "finding_types": "CASE g %% 40 WHEN 0 THEN 'pii' WHEN 1 THEN 'pii,secrets' ELSE '' END",
    "cost_usd": "(g %% 1000) / 10000.0",
    "latency_ms": "g %% 500",
}


def bulk_insert(count: int, *, now: datetime, keys: list[VirtualKey]) -> None:
    """``count`` request-log rows in one INSERT … SELECT generate_series (PostgreSQL)."""
    orgs = [k.project.team.organization_id for k in keys[:2]]
    context = {
        "now": "%(now)s",
        "orgs": f"ARRAY{orgs}",
        "teams": f"ARRAY{[k.project.team_id for k in keys[:2]]}",
        "projects": f"ARRAY{[k.project_id for k in keys[:2]]}",
        "keys": f"ARRAY{[k.pk for k in keys[:2]]}",
    }
    columns, expressions, params = [], [], {"now": now}
    for field in RequestLog._meta.concrete_fields:
        if field.primary_key:
            continue
        if field.attname in BULK_SQL:
            expressions.append(BULK_SQL[field.attname].format(**context))
        elif field.null:
            continue
        else:  # a column the model fills by default (e.g. added later): its default value
            params[field.attname] = field.get_db_prep_save(field.get_default(), connection)
            expressions.append(f"%({field.attname})s")
        columns.append(connection.ops.quote_name(field.column))
    sql = (
        f"INSERT INTO audit_requestlog ({', '.join(columns)}) "  # noqa: S608 - constants
        f"SELECT {', '.join(expressions)} FROM generate_series(1, {int(count)}) AS g"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        cursor.execute("ANALYZE audit_requestlog")


LOG_TABLE = '"audit_requestlog"'


def log_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if f"FROM {LOG_TABLE}" in q["sql"]]


@pytest.mark.django_db
def test_changelist_at_100k_rows_is_bounded_and_uses_indexes(admin_client, data):
    if connection.vendor != "postgresql":
        pytest.skip("the bulk insert and EXPLAIN checks need PostgreSQL")
    keys = [data.prod, data.globex_prod]  # row g: acme's when g is even, globex's when odd
    bulk_insert(BULK_ROWS, now=timezone.now(), keys=keys)
    admin_client.get(CHANGELIST_URL)  # warm the session and content types

    queries_by_filter = {
        "": 20,
        "?org=acme": 20,
        f"?org={data.globex.pk}": 20,
        "?org=acme&team=search": 20,
        "?project=assistant": 20,
        "?key=prod": 20,
        f"?key={data.globex_prod.prefix}": 20,
        "?model=claude-3-5-haiku": 20,
        "?status=5xx": 20,
        "?status=429": 20,
        "?error_code=rate_limited": 20,
        "?finding=pii": 20,
        "?cost_min=0.05&cost_max=0.06": 20,
        "?provider=claude-main": 20,
        "?endpoint=embeddings&stream=false": 20,
        "?from=7d&status=4xx": 20,
        "?from=30d&to=20d&org=globex": 20,
        "?org=acme&team=search&project=assistant&key=prod&model=gpt-4o-mini&status=2xx": 1,
        "?q=bulk-77777": 1,
        "?p=3": 20,
    }
    for query, min_rows in queries_by_filter.items():
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(CHANGELIST_URL + query)
        assert response.status_code == 200, query
        shown = len(response.context["cl"].result_list)
        assert shown >= min(min_rows, RequestLogAdmin.list_per_page), query
        sql = log_queries(captured)
        assert len(captured) <= 10, (query, [q["sql"] for q in captured])
        assert len(sql) == 2, (query, sql)  # the paginator's look-ahead and the page
        for statement in sql:
            assert "COUNT(" not in statement.upper(), (query, statement)
            assert "LIMIT" in statement, (query, statement)  # never an unbounded read
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + statement)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on audit_requestlog" not in plan, (query, plan)
            assert "Index" in plan, (query, plan)
