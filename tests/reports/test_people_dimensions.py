"""Reports group by user (the key's owner) and end user: roll-ups keep both dimensions,
the spend report and its API label them, organisation scoping still holds, and a
person's budget (which spans organisations) is listed in no organisation's report."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.test import Client

from apps.api.services import admin_token_issue
from apps.policies.models import Budget
from apps.reports.exports import report_csv
from apps.reports.models import UsageRollup
from apps.reports.rollup import usage_rollup_run
from apps.reports.selectors import NONE_LABEL, spend_report_build, spend_report_spec
from tests.reports.conftest import insert, oracle, random_rows

FEB_27, MAR_2 = date(2026, 2, 27), date(2026, 3, 2)


@pytest.fixture
def data(tenants):
    rows = insert(random_rows(tenants, random.Random(1515), 500))
    usage_rollup_run(now=datetime(2026, 3, 10, tzinfo=UTC))
    return rows


def _in_range(rows, org=None):
    start, end = datetime(2026, 2, 27, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    return [
        r
        for r in rows
        if start <= r.created_at < end and (org is None or r.organization_id == org.pk)
    ]


def _username(user_id, tenants) -> str:
    if user_id is None:
        return NONE_LABEL
    return next(k.owner.username for k in tenants.keys if k.owner_id == user_id)


@pytest.mark.django_db
def test_rollups_keep_the_owner_and_the_end_user_of_each_request(data):
    assert UsageRollup.objects.exclude(user=None).exists()
    assert UsageRollup.objects.exclude(end_user="").exists()
    by_user = oracle(data, lambda r: r.user_id)
    for user_id, agg in by_user.items():
        rows = UsageRollup.objects.filter(user_id=user_id)
        assert sum(r.requests for r in rows) == agg.requests
        assert sum((r.cost_usd for r in rows), Decimal(0)) == agg.cost_usd


@pytest.mark.django_db
def test_the_spend_report_groups_by_user_and_end_user_exactly(data, tenants):
    spec = spend_report_spec(start=FEB_27, end=MAR_2, group_by="user,end_user", granularity="month")
    report = spend_report_build(spec)

    expected = oracle(
        _in_range(data), lambda r: (_username(r.user_id, tenants), r.end_user or NONE_LABEL)
    )
    got: dict[tuple[str, str], Decimal] = {}
    for row in report.rows:
        pair = (row.groups["user"], row.groups["end_user"])
        got[pair] = got.get(pair, Decimal(0)) + row.figures.cost_usd
    assert got == {pair: agg.cost_usd for pair, agg in expected.items()}
    # alice owns keys in two organisations: her spend adds up across both.
    assert {"alice", "bob", NONE_LABEL} == {user for user, _ in got}
    header = next(csv.reader(io.StringIO(report_csv(report).decode("utf-8-sig"))))
    assert header[:3] == ["period", "user", "end_user"]


@pytest.mark.django_db
def test_an_organisations_token_sees_its_own_end_users_and_people_only(data, tenants):
    token = admin_token_issue(name="acme-finance", organization=tenants.acme).secret
    response = Client().get(
        "/api/v1/reports/spend",
        {"start": "2026-02-27", "end": "2026-03-02", "group_by": "user,end_user"},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    acme_rows = _in_range(data, tenants.acme)
    assert Decimal(body["totals"]["cost_usd"]) == sum((r.cost_usd for r in acme_rows), Decimal(0))
    per_user: dict[str, Decimal] = {}
    for row in body["rows"]:
        per_user[row["user"]] = per_user.get(row["user"], Decimal(0)) + Decimal(row["cost_usd"])
    alice = tenants.keys[0].owner
    alice_acme = sum((r.cost_usd for r in acme_rows if r.user_id == alice.pk), Decimal(0))
    alice_all = sum((r.cost_usd for r in _in_range(data) if r.user_id == alice.pk), Decimal(0))
    assert per_user["alice"] == alice_acme < alice_all  # her globex spend is not shown
    bad = Client().get(
        "/api/v1/reports/spend",
        {"start": "2026-02-27", "end": "2026-03-02", "group_by": "user,customer"},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert bad.status_code == 422


@pytest.mark.django_db
def test_a_persons_budget_is_in_no_organisations_budget_vs_actual(data, tenants):
    Budget.objects.create(user=tenants.keys[0].owner, limit_usd=Decimal("1"))
    org_budget = Budget.objects.create(organization=tenants.acme, limit_usd=Decimal("5"))
    for organization_ids in ([tenants.acme.pk], None):
        spec = spend_report_spec(start=FEB_27, end=MAR_2, organization_ids=organization_ids)
        assert {b.budget_id for b in spend_report_build(spec).budgets} == {org_budget.pk}
