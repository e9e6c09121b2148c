"""The spend report: built from roll-ups only, its rows and totals reconcile exactly with
the raw records (checked against the database's own sums and a Python oracle), in JSON,
CSV and XLSX, with budget vs actual."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, date, datetime
from decimal import Decimal

import openpyxl
import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Sum
from django.test.utils import CaptureQueriesContext

from apps.audit.models import RequestLog
from apps.core.money import usd_exact
from apps.policies.models import Budget
from apps.providers.models import Model
from apps.reports.exports import report_csv, report_file, report_json, report_xlsx
from apps.reports.rollup import usage_rollup_run
from apps.reports.selectors import spend_report_build, spend_report_spec
from tests.reports.conftest import insert, log_row, oracle, random_rows, total

NOW = datetime(2026, 3, 10, tzinfo=UTC)
FEB_27, MAR_1, MAR_2 = date(2026, 2, 27), date(2026, 3, 1), date(2026, 3, 2)


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def in_range(rows, start: date, end: date, org=None):
    return [
        r
        for r in rows
        if at(start) <= r.created_at < at(end) and (org is None or r.organization_id == org.pk)
    ]


@pytest.fixture
def data(tenants):
    rows = insert(random_rows(tenants, random.Random(424242), 600))
    usage_rollup_run(now=NOW)
    return rows


def raw_totals(start: date, end: date, org=None) -> dict:
    """The database's own sums over the raw records: the figure finance reconciles with."""
    qs = RequestLog.objects.filter(created_at__gte=at(start), created_at__lt=at(end))
    if org is not None:
        qs = qs.filter(organization_id=org.pk)
    return qs.aggregate(
        requests=Count("id"),
        cost=Sum("cost_usd"),
        tok_in=Sum("input_tokens"),
        tok_out=Sum("output_tokens"),
        tok_cached=Sum("cached_tokens"),
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("group_by", "granularity"),
    [((), "day"), (("team", "model"), "day"), (("org", "key", "provider"), "month")],
)
def test_totals_reconcile_exactly_and_never_read_raw_records(data, tenants, group_by, granularity):
    # Starts mid-data (Feb 27) and ends mid-data (Mar 2): rows outside must not count.
    spec = spend_report_spec(start=FEB_27, end=MAR_2, group_by=group_by, granularity=granularity)
    with CaptureQueriesContext(connection) as queries:
        report = spend_report_build(spec)
    assert not [q for q in queries if RequestLog._meta.db_table in q["sql"]]

    raw = raw_totals(FEB_27, MAR_2)
    expected = total(in_range(data, FEB_27, MAR_2))
    t = report.totals
    assert t.requests == raw["requests"] == expected.requests
    assert t.cost_usd == raw["cost"] == expected.cost_usd
    assert (t.input_tokens, t.output_tokens, t.cached_tokens) == (
        raw["tok_in"],
        raw["tok_out"],
        raw["tok_cached"],
    )
    assert (t.errors, t.refusals) == (expected.errors, expected.refusals)
    assert sum(r.figures.cost_usd for r in report.rows) == t.cost_usd
    assert sum(r.figures.requests for r in report.rows) == t.requests
    assert {r.period for r in report.rows} == (
        {"2026-02-27", "2026-02-28", "2026-03-01"}
        if granularity == "day"
        else {"2026-02", "2026-03"}
    )


@pytest.mark.django_db
def test_rows_per_team_model_and_day_match_the_oracle(data, tenants):
    spec = spend_report_spec(
        start=FEB_27,
        end=MAR_2,
        group_by="team,model",
        organization_ids=[tenants.acme.pk],
    )
    report = spend_report_build(spec)
    teams = {t.pk: t.name for t in tenants.acme.teams.all()}
    expected = oracle(
        in_range(data, FEB_27, MAR_2, tenants.acme),
        lambda r: (f"{r.created_at:%Y-%m-%d}", teams[r.team_id], r.model_requested),
    )
    got = {(r.period, r.groups["team"], r.groups["model"]): r.figures for r in report.rows}
    assert set(got) == set(expected)
    for ident, agg in expected.items():
        assert (got[ident].requests, got[ident].cost_usd) == (agg.requests, agg.cost_usd)
        assert got[ident].output_tokens == agg.output_tokens
    assert report.organizations == ["acme"]
    assert report.totals.cost_usd == raw_totals(FEB_27, MAR_2, tenants.acme)["cost"]


@pytest.mark.django_db
def test_labels_name_keys_projects_and_requests_without_a_key(data, tenants):
    spec = spend_report_spec(start=FEB_27, end=MAR_2, group_by="org,project,key")
    labels = {tuple(r.groups.values()) for r in spend_report_build(spec).rows}
    prod = tenants.keys[0]
    assert ("acme", "search/assistant", f"prod ({prod.prefix})") in labels
    assert ("(none)", "(none)", "(none)") in labels  # 401s: no organisation, no key


def read_csv(content: bytes) -> tuple[list[list[str]], list[list[str]]]:
    lines = list(csv.reader(io.StringIO(content.decode())))
    blank = lines.index([])
    return lines[:blank], lines[blank + 1 :]


@pytest.mark.django_db
def test_csv_totals_row_equals_raw_sums_and_has_a_budget_section(data, tenants):
    Budget.objects.create(organization=tenants.acme, limit_usd=Decimal("5"), period="monthly")
    spec = spend_report_spec(
        start=FEB_27, end=MAR_2, group_by="team,model", organization_ids=[tenants.acme.pk]
    )
    spend, budgets = read_csv(report_csv(spend_report_build(spec)))
    header, *rows, totals = spend
    assert header == [
        "period",
        "team",
        "model",
        "requests",
        "errors",
        "refusals",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cost_usd",
    ]
    raw = raw_totals(FEB_27, MAR_2, tenants.acme)
    assert totals[0] == "TOTAL"
    assert int(totals[3]) == raw["requests"]
    assert Decimal(totals[-1]) == raw["cost"]
    assert sum(Decimal(r[-1]) for r in rows) == raw["cost"]
    assert sum(int(r[6]) for r in rows) == raw["tok_in"]
    # A model name that is a formula reaches the sheet as text, never as a formula.
    assert any(r[2] == '\'=HYPERLINK("http://x")' for r in rows)
    assert budgets[0] == ["Budget vs actual"]
    assert budgets[1][:2] == ["organization", "level"]
    assert [b[4] for b in budgets[2:]] == ["m202602", "m202603"]


@pytest.mark.django_db
def test_xlsx_read_back_totals_equal_raw_sums(data, tenants):
    spec = spend_report_spec(start=FEB_27, end=MAR_2, group_by="key,provider", granularity="day")
    report = spend_report_build(spec)
    book = openpyxl.load_workbook(io.BytesIO(report_xlsx(report)))
    assert book.sheetnames == ["Spend", "Budget vs actual", "About"]
    rows = list(book["Spend"].iter_rows(values_only=True))
    header, body, totals = rows[0], rows[1:-1], rows[-1]
    assert header[:3] == ("period", "key", "provider") and header[-1] == "cost_usd"
    raw = raw_totals(FEB_27, MAR_2)
    assert totals[0] == "TOTAL" and totals[3] == raw["requests"]
    # Cells are spreadsheet numbers (doubles); these totals fit in their 15 digits.
    assert Decimal(repr(totals[-1])) == raw["cost"]
    assert sum(r[3] for r in body) == raw["requests"]
    assert book["Spend"]["A1"].font.b
    about = dict(book["About"].iter_rows(values_only=True))
    assert Decimal(about["Total cost (USD, exact)"]) == raw["cost"]
    assert not any(
        isinstance(c, str) and c.startswith("=") for r in body for c in r
    )  # no formula cells


@pytest.mark.django_db
def test_budget_vs_actual_per_level_and_period(data, tenants):
    gpt = Model.objects.create(
        name="gpt-4o-mini", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("1")
    )
    team = tenants.keys[0].project.team
    key = tenants.keys[3]
    org_budget = Budget.objects.create(
        organization=tenants.acme, limit_usd=Decimal("2"), period="monthly"
    )
    team_budget = Budget.objects.create(
        team=team, model=gpt, limit_usd=Decimal("0.5"), period="daily", hard=False
    )
    key_budget = Budget.objects.create(key=key, limit_usd=Decimal("0"), period="total")
    Budget.objects.create(organization=tenants.globex, limit_usd=Decimal("1"))  # out of scope

    spec = spend_report_spec(start=date(2026, 2, 28), end=MAR_2, organization_ids=[tenants.acme.pk])
    budgets = spend_report_build(spec).budgets
    by = {(b.budget_id, b.period_key): b for b in budgets}
    assert {b.organization for b in budgets} == {"acme"}
    assert [b.level for b in budgets][:1] == ["org:acme"]  # org level first

    def spent(rows, start, end):
        return sum((r.cost_usd for r in rows if at(start) <= r.created_at < at(end)), Decimal(0))

    acme_rows = [r for r in data if r.organization_id == tenants.acme.pk]
    feb = by[(org_budget.pk, "m202602")]
    assert feb.spent_usd == spent(acme_rows, date(2026, 2, 1), MAR_1)  # the whole month
    assert feb.percent_used == (feb.spent_usd * 50).quantize(Decimal("0.01"))
    assert by[(org_budget.pk, "m202603")].spent_usd == spent(acme_rows, MAR_1, date(2026, 4, 1))

    team_rows = [r for r in data if r.team_id == team.pk and r.model_requested == "gpt-4o-mini"]
    for day in (date(2026, 2, 28), MAR_1):
        row = by[(team_budget.pk, f"d{day:%Y%m%d}")]
        nxt = date.fromordinal(day.toordinal() + 1)
        assert row.spent_usd == spent(team_rows, day, nxt)
        assert row.remaining_usd == max(Decimal("0.5") - row.spent_usd, Decimal(0))
        assert row.hard is False
    total_row = by[(key_budget.pk, "total")]
    assert total_row.spent_usd == sum((r.cost_usd for r in data if r.key_id == key.pk), Decimal(0))
    assert total_row.percent_used is None  # a zero limit has no share
    assert len(budgets) == 2 + 2 + 1


@pytest.mark.django_db
def test_json_money_is_exact_strings(data, tenants):
    spec = spend_report_spec(start=FEB_27, end=MAR_2, group_by=["model"], granularity="month")
    body = report_json(spend_report_build(spec))
    # Exact, without trailing zeros (apps.core.money.usd_exact).
    assert body["totals"]["cost_usd"] == usd_exact(raw_totals(FEB_27, MAR_2)["cost"])
    assert Decimal(body["totals"]["cost_usd"]) == raw_totals(FEB_27, MAR_2)["cost"]
    assert not body["totals"]["cost_usd"].endswith("0")
    assert {row["model"] for row in body["rows"]} >= {"gpt-4o-mini", "claude-haiku"}
    assert body["organizations"] is None
    file = report_file(spend_report_build(spec), "csv")
    assert file.filename == "spend_all_2026-02-27_2026-03-02.csv"


@pytest.mark.django_db
def test_a_late_row_reaches_the_report_after_the_next_rollup(data, tenants):
    spec = spend_report_spec(start=FEB_27, end=MAR_2)
    before = spend_report_build(spec).totals
    insert([log_row(tenants.keys[1], datetime(2026, 2, 27, 1, tzinfo=UTC), cost=Decimal("3"))])
    usage_rollup_run(now=NOW)
    after = spend_report_build(spec).totals
    assert after.cost_usd == before.cost_usd + 3 == raw_totals(FEB_27, MAR_2)["cost"]


def test_spec_validation():
    with pytest.raises(ValidationError) as end:
        spend_report_spec(start=MAR_1, end=MAR_1)
    assert "end" in end.value.message_dict
    with pytest.raises(ValidationError) as group:
        spend_report_spec(start=FEB_27, end=MAR_1, group_by="team,colour")
    assert "group_by" in group.value.message_dict
    with pytest.raises(ValidationError):
        spend_report_spec(start=FEB_27, end=MAR_1, granularity="week")
    with pytest.raises(ValidationError):
        spend_report_spec(start=date(2020, 1, 1), end=date(2026, 1, 1))
    assert spend_report_spec(start=FEB_27, end=MAR_1, group_by=" Team,team,model").group_by == (
        "team",
        "model",
    )
