"""The audit endpoints of the management API: search with keyset pages, one record, and
streamed exports — all scoped by the caller's admin token."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.api.audit import cursor_decode, cursor_encode
from apps.api.services import admin_token_issue
from apps.audit.models import RequestLog
from apps.audit.selectors import Position
from apps.keys.models import VirtualKey
from tests.factories import key_create, org_create, project_create, team_create

API = "/api/v1/audit"


def call(path: str, token: str | None, **params: Any):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().get(API + path, params, **headers)


class World:
    def __init__(self) -> None:
        self.acme = org_create("acme")
        self.globex = org_create("globex")
        acme_project = project_create(team_create(self.acme, "search"), "assistant")
        globex_project = project_create(team_create(self.globex, "search"), "lab")
        self.prod: VirtualKey = key_create(acme_project, "prod").key
        self.staging: VirtualKey = key_create(acme_project, "staging").key
        self.globex_key: VirtualKey = key_create(globex_project, "prod").key
        self.acme_token = admin_token_issue(name="acme-ops", organization=self.acme).secret
        self.platform_token = admin_token_issue(name="platform").secret
        self.now = timezone.now().replace(microsecond=123456)
        self.rows: list[RequestLog] = []

    def log(self, key: VirtualKey, minutes_ago: float, **fields: Any) -> RequestLog:
        team = key.project.team
        row = RequestLog.objects.create(
            request_id=fields.pop("request_id", f"req-api-{len(self.rows):03d}"),
            created_at=self.now - timedelta(minutes=minutes_ago),
            organization_id=team.organization_id,
            team_id=team.pk,
            project_id=key.project_id,
            key_id=key.pk,
            key_prefix=key.prefix,
            endpoint=fields.pop("endpoint", "chat.completions"),
            status_code=fields.pop("status_code", 200),
            **fields,
        )
        self.rows.append(row)
        return row

    def ordered(self, predicate=lambda r: True) -> list[str]:
        rows = sorted(self.rows, key=lambda r: (r.created_at, r.pk), reverse=True)
        return [r.request_id for r in rows if predicate(r)]


@pytest.fixture
def world(db) -> World:
    w = World()
    for i in range(12):
        w.log(
            (w.prod, w.staging, w.globex_key)[i % 3],
            # four rows share each timestamp
            minutes_ago=10 * (i // 4),
            status_code=(200, 429, 502)[i % 3],
            error_code=("", "rate_limited", "upstream_error")[i % 3],
            model_requested=("gpt-4o-mini", "claude")[i % 2],
            provider=("openai-main", "claude-main")[i % 2],
            finding_types=("", "pii,secrets", "secrets")[i % 3],
            cost_usd=Decimal("0.001") * i,
            decisions=[["authenticate", "allow", ""]],
            content={"mode": "full", "request": f"prompt {i}", "response": "ok"},
        )
    w.log(w.prod, minutes_ago=60 * 24 * 40, request_id="req-api-old")  # no time window in the API
    return w


def request_ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["request_id"] for item in response.json()["items"]]


def test_requires_a_token(world):
    assert call("/records", None).status_code == 401
    assert call("/records", "odk-admin-wrong").status_code == 401
    assert call("/export", None).status_code == 401
    assert call("/records/req-api-000", None).status_code == 401


def test_platform_token_lists_everything_newest_first(world):
    assert request_ids(call("/records", world.platform_token, limit=1000)) == world.ordered()


@pytest.mark.parametrize(
    ("params", "predicate"),
    [
        ({"status": "5xx"}, lambda w, r: r.status_code >= 500),
        ({"status": "429"}, lambda w, r: r.status_code == 429),
        ({"org": "globex"}, lambda w, r: r.organization_id == w.globex.pk),
        ({"team": "search", "org": "acme"}, lambda w, r: r.organization_id == w.acme.pk),
        ({"key": "prod"}, lambda w, r: r.key_id in (w.prod.pk, w.globex_key.pk)),
        ({"model": "claude"}, lambda w, r: r.model_requested == "claude"),
        ({"provider": "openai-main"}, lambda w, r: r.provider == "openai-main"),
        ({"error_code": "rate_limited"}, lambda w, r: r.error_code == "rate_limited"),
        ({"finding": "secrets"}, lambda w, r: "secrets" in r.finding_types.split(",")),
        ({"finding": "pii"}, lambda w, r: "pii" in r.finding_types.split(",")),
        (
            {"cost_min": "0.003", "cost_max": "0.006"},
            lambda w, r: Decimal("0.003") <= r.cost_usd <= Decimal("0.006"),
        ),
        ({"from": "15m"}, lambda w, r: r.created_at >= w.now - timedelta(minutes=15)),
        ({"to": "1d"}, lambda w, r: r.request_id == "req-api-old"),
        ({"endpoint": "embeddings"}, lambda w, r: False),
    ],
)
def test_filters_as_query_parameters(world, params, predicate):
    got = request_ids(call("/records", world.platform_token, limit=1000, **params))
    assert got == world.ordered(lambda r: predicate(world, r))


def test_out_of_range_ids_match_nothing_rather_than_fail(world):
    for name in ("key", "team"):
        assert request_ids(call("/records", world.platform_token, **{name: "9" * 30})) == []
        # Outside the documented alphabet (ids, slugs, key prefixes): refused, not a 500.
        assert call("/records", world.platform_token, **{name: "²"}).status_code == 422


def test_key_by_id_and_prefix(world):
    by_id = request_ids(call("/records", world.platform_token, key=str(world.staging.pk)))
    by_prefix = request_ids(call("/records", world.platform_token, key=world.staging.prefix))
    assert by_id == by_prefix == world.ordered(lambda r: r.key_id == world.staging.pk)


# --- scoping -----------------------------------------------------------------------------


def test_org_token_sees_only_its_organisation(world):
    got = request_ids(call("/records", world.acme_token, limit=1000))
    assert got == world.ordered(lambda r: r.organization_id == world.acme.pk)
    assert request_ids(call("/records", world.acme_token, org="acme", limit=1000)) == got


@pytest.mark.parametrize("org", ["globex", "nope", "999999"])
def test_org_token_cannot_widen_its_scope(world, org):
    response = call("/records", world.acme_token, org=org)
    assert response.status_code == 403
    assert call("/export", world.acme_token, org=org).status_code == 403


def test_other_organisations_keys_and_teams_match_nothing(world):
    token = world.acme_token
    assert request_ids(call("/records", token, key=str(world.globex_key.pk))) == []
    assert request_ids(call("/records", token, key=world.globex_key.prefix)) == []
    assert request_ids(call("/records", token, project="lab")) == []
    acme_prod = request_ids(call("/records", token, key="prod"))  # globex has a "prod" too
    assert acme_prod == world.ordered(lambda r: r.key_id == world.prod.pk)


def test_one_record_by_request_id(world):
    row = world.rows[4]  # an acme row
    response = call(f"/records/{row.request_id}", world.acme_token)
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == row.request_id
    assert body["created_at"] == row.created_at.isoformat()  # to the microsecond
    assert body["created_at"].endswith(".123456+00:00")
    assert body["cost_usd"] == "0.004"  # a string, never a float; exact, no zero noise
    assert body["finding_types"] == ["pii", "secrets"]
    assert body["decisions"] == [["authenticate", "allow", ""]]
    assert body["content"] == {"mode": "full", "request": "prompt 4", "response": "ok"}
    globex_row = world.rows[2]
    assert call(f"/records/{globex_row.request_id}", world.acme_token).status_code == 404
    assert call(f"/records/{globex_row.request_id}", world.platform_token).status_code == 200
    assert call("/records/req-nope", world.platform_token).status_code == 404


def test_content_only_when_asked(world):
    plain = call("/records", world.platform_token, limit=2).json()["items"]
    assert [item["content"] for item in plain] == [None, None]
    full = call("/records", world.platform_token, limit=2, include_content="true").json()["items"]
    assert all(item["content"]["mode"] == "full" for item in full)


# --- keyset pagination -------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3, 4, 5, 13])
def test_cursor_pages_return_every_row_once_in_order(world, limit):
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = call("/records", world.platform_token, **params)
        page = request_ids(response)
        assert len(page) <= limit
        seen += page
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == world.ordered()  # in order, every row, none twice
    assert len(seen) == len(set(seen)) == 13


def test_cursor_pages_keep_filters_and_scope(world):
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "status": "2xx", **({"cursor": cursor} if cursor else {})}
        response = call("/records", world.acme_token, **params)
        seen += request_ids(response)
        if not (cursor := response.json()["next_cursor"]):
            break
    assert seen == world.ordered(
        lambda r: r.organization_id == world.acme.pk and r.status_code == 200
    )


def test_cursor_is_a_position_and_every_well_formed_one_works(world):
    """``a1.<µs since 1970>.<id>``: the schema's pattern says which cursors exist, and each
    of them is a position to start after (one beyond the years Python holds is clamped)."""
    position = Position(world.now, 42)
    token = cursor_encode(position)
    assert (
        token
        == f"a1.{(world.now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)}.42"
    )
    assert cursor_decode(token) == position
    newest_first = world.ordered()
    for cursor, expected in (
        ("a1.999999999999999999.999999999999999999", newest_first),  # after everything
        ("a1.-999999999999999999.1", []),  # before the year 1
    ):
        response = call("/records", world.platform_token, cursor=cursor, limit=1000)
        assert request_ids(response) == expected, cursor
    for bad in ("garbage", "a1:1:2", "a1.1", "a1.1.2.3", "a1.x.2", "a1.1." + "9" * 19, "a2V5"):
        assert call("/records", world.platform_token, cursor=bad).status_code == 422, bad


def test_an_empty_range_is_an_empty_page_not_an_error(world):
    for params in ({"from": "1h", "to": "2h"}, {"cost_min": "2", "cost_max": "1"}):
        assert request_ids(call("/records", world.platform_token, **params)) == []
        assert consume(call("/export", world.platform_token, **params)) == ""


def test_unknown_parameters_are_422_not_ignored(world):
    """A misspelt filter (``stauts``) would otherwise widen the answer to everything."""
    for path in ("/records", "/export", "/records/req-api-000"):
        response = call(path, world.platform_token, stauts="5xx")
        assert response.status_code == 422, path
        assert response.json()["detail"][0]["loc"] == ["stauts"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"status": "6xx"},
        {"cost_min": "-1"},
        {"cost_min": "abc"},
        {"from": "yesterday"},
        {"finding": "a,b"},
    ],
)
def test_invalid_parameters_are_422(world, params):
    assert call("/records", world.platform_token, **params).status_code == 422


def test_limit_up_to_1000_is_accepted(world):
    assert call("/records", world.platform_token, limit=1000).status_code == 200


def test_a_page_is_a_few_bounded_queries_without_count(world):
    for _ in range(30):
        world.log(world.prod, minutes_ago=5)
    with CaptureQueriesContext(connection) as queries:
        response = call("/records", world.acme_token, limit=10, key="prod", team="search")
    assert response.status_code == 200 and len(response.json()["items"]) == 10
    log_sql = [q["sql"] for q in queries if 'FROM "audit_requestlog"' in q["sql"]]
    assert len(log_sql) == 1 and "LIMIT 11" in log_sql[0]
    assert not [q for q in queries if "COUNT(" in q["sql"].upper()]
    assert len(queries) <= 6  # token, its last-use stamp, team, key, the page


# --- export ------------------------------------------------------------------------------


def consume(response) -> str:
    assert response.status_code == 200, getattr(response, "content", b"")
    assert response.streaming
    return b"".join(response.streaming_content).decode()


def test_export_jsonl_and_csv_with_filters_and_scope(world):
    expected = world.ordered(lambda r: r.organization_id == world.acme.pk and r.status_code == 429)

    jsonl = call("/export", world.acme_token, format="jsonl", status="429")
    assert jsonl["Content-Type"].startswith("application/x-ndjson")
    assert "attachment" in jsonl["Content-Disposition"] and ".jsonl" in jsonl["Content-Disposition"]
    records = [json.loads(line) for line in consume(jsonl).splitlines()]
    assert [r["request_id"] for r in records] == expected
    assert all(r["organization_id"] == world.acme.pk for r in records)
    assert isinstance(records[0]["cost_usd"], str) and isinstance(records[0]["content"], dict)

    response = call("/export", world.acme_token, format="csv", status="429")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(consume(response))))
    assert [r["request_id"] for r in rows] == expected
    assert json.loads(rows[0]["content"])["mode"] == "full"


def test_export_covers_all_time_and_defaults_to_jsonl(world):
    text = consume(call("/export", world.platform_token))
    assert len(text.splitlines()) == len(world.rows)
    assert "req-api-old" in text


def test_export_rejects_unknown_format(world):
    assert call("/export", world.platform_token, format="xml").status_code == 422


def test_openapi_documents_the_audit_endpoints(db):
    schema = Client().get("/api/v1/openapi.json").json()
    assert {f"{API}/records", f"{API}/records/{{request_id}}", f"{API}/export"} <= set(
        schema["paths"]
    )
    params = {p["name"] for p in schema["paths"][f"{API}/records"]["get"]["parameters"]}
    assert {"from", "to", "org", "key", "status", "finding", "cursor", "limit"} <= params
