"""The dashboard's JSON endpoints: aggregates of seeded roll-ups, filters, and who may ask."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.urls import reverse

from apps.dashboard.selectors import budget_burn, dashboard_scope, findings_by_type
from apps.identity.models import Role
from apps.policies.models import Budget
from apps.policies.rollup import period_window
from apps.reports.histogram import histogram_merge, histogram_percentile
from tests.dashboard.conftest import current_hour, finding_log, histogram, make_user, rollup
from tests.factories import key_create, org_create, project_create, team_create

pytestmark = pytest.mark.django_db


def data(client, chart: str, **params) -> dict:
    response = client.get(reverse("dashboard:data", args=[chart]), params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


def at(payload: dict, values: list, hour: datetime):
    """The value of a series at the bucket holding ``hour``."""
    return values[payload["labels"].index(hour.isoformat())]


# --- Aggregates -----------------------------------------------------------------------


def test_overview_totals_per_range_and_organisation(staff_client, seeded):
    everything = data(staff_client, "overview", range="24h")
    assert Decimal(everything["total_usd"]) == Decimal("14.75")
    assert everything["requests"] == 39
    assert (everything["errors"], everything["refusals"]) == (7, 3)
    assert everything["error_rate"] == round(7 * 100 / 39, 2)

    acme = data(staff_client, "overview", range="24h", org=seeded.acme.pk)
    assert Decimal(acme["total_usd"]) == Decimal("4.75")
    assert acme["requests"] == 35
    # Three days ago counts in 7 d and 30 d; forty days ago in neither.
    assert Decimal(data(staff_client, "overview", range="7d", org=seeded.acme.pk)["total_usd"]) == (
        Decimal("6.75")
    )
    assert Decimal(
        data(staff_client, "overview", range="30d", org=seeded.acme.pk)["total_usd"]
    ) == (Decimal("6.75"))


def test_spend_per_team_is_stacked_hourly_for_a_day(staff_client, seeded):
    payload = data(staff_client, "spend-team", range="24h")
    assert payload["bucket"] == "hour" and len(payload["labels"]) == 24
    series = {s["label"]: s["data"] for s in payload["series"]}
    # Ordered by spend, labelled organisation/team.
    assert [s["label"] for s in payload["series"]] == ["globex/other", "acme/ads", "acme/search"]
    assert Decimal(at(payload, series["acme/search"], seeded.h1)) == Decimal("1.75")
    assert Decimal(at(payload, series["acme/search"], seeded.h3)) == 0
    assert Decimal(at(payload, series["acme/ads"], seeded.h3)) == Decimal("3")
    assert Decimal(at(payload, series["globex/other"], seeded.h3)) == Decimal("10")
    assert sum(Decimal(v) for s in series.values() for v in s) == Decimal(payload["total_usd"])
    assert Decimal(payload["total_usd"]) == Decimal("14.75")


def test_spend_per_model_daily_over_a_week(staff_client, seeded):
    payload = data(staff_client, "spend-model", range="7d", org=seeded.acme.pk)
    assert payload["bucket"] == "day" and len(payload["labels"]) == 7
    assert all(label.endswith("T00:00:00+00:00") for label in payload["labels"])
    series = {s["label"]: [Decimal(v) for v in s["data"]] for s in payload["series"]}
    assert sum(series["gpt-4o-mini"]) == Decimal("6.5")  # 1.5 + 3 today-ish, 2 three days ago
    assert sum(series["claude-haiku"]) == Decimal("0.25")
    three_days_ago = (current_hour() - timedelta(days=3)).replace(hour=0)
    assert at(payload, series["gpt-4o-mini"], three_days_ago) == Decimal("2")


def test_spend_beyond_the_series_limit_is_folded_into_other(staff_client, db):
    key = key_create().key
    hour = current_hour() - timedelta(hours=2)
    for i in range(10):
        rollup(hour, key, model=f"model-{i:02d}", cost=str(i + 1), requests=1)
    payload = data(staff_client, "spend-model", range="24h")
    labels = [s["label"] for s in payload["series"]]
    assert labels[:8] == [f"model-{i:02d}" for i in range(9, 1, -1)]
    assert labels[8] == "Other"
    assert Decimal(at(payload, payload["series"][8]["data"], hour)) == Decimal(1 + 2)


def test_top_keys_by_spend(staff_client, seeded):
    keys = data(staff_client, "top-keys", range="24h", org=seeded.acme.pk)["keys"]
    assert [k["key_id"] for k in keys] == [
        seeded.keys["k3"].pk,
        seeded.keys["k1"].pk,
        seeded.keys["k2"].pk,
    ]
    assert [Decimal(k["cost_usd"]) for k in keys] == [Decimal(3), Decimal("1.5"), Decimal("0.25")]
    assert keys[0]["label"] == f"ads-bidder ({seeded.keys['k3'].prefix})"
    assert keys[0]["requests"] == 20


def test_error_and_refusal_rates_per_bucket(staff_client, seeded):
    payload = data(staff_client, "rates", range="24h", org=seeded.acme.pk)
    assert at(payload, payload["requests"], seeded.h1) == 15
    assert at(payload, payload["errors"], seeded.h1) == 1
    assert at(payload, payload["refusals"], seeded.h1) == 3
    assert at(payload, payload["error_rate"], seeded.h1) == round(100 / 15, 2)
    assert at(payload, payload["refusal_rate"], seeded.h1) == 20.0
    assert at(payload, payload["error_rate"], seeded.h3) == 10.0
    # An hour without requests has no rate (a gap in the line, not a 0 %).
    quiet = current_hour() - timedelta(hours=10)
    assert at(payload, payload["error_rate"], quiet) is None


def test_latency_percentiles_merge_the_histograms(staff_client, seeded):
    payload = data(staff_client, "latency", range="24h", org=seeded.acme.pk)
    h1 = histogram_merge([histogram(ms100=8, ms1000=2), histogram(ms200=5)])
    for q in (50, 95, 99):
        assert at(payload, payload[f"p{q}"], seeded.h1) == round(
            histogram_percentile(h1, q / 100), 1
        )
    # 8 of 15 at 100 ms, 5 at 200 ms, 2 at 1 s: p50 near 100 ms, p99 near 1 s (one bucket).
    assert 84 <= at(payload, payload["p50"], seeded.h1) <= 120
    assert 840 <= at(payload, payload["p99"], seeded.h1) <= 1200
    assert 42 <= at(payload, payload["p50"], seeded.h3) <= 60
    overall = histogram_merge([h1, histogram(ms50=20)])
    assert payload["overall"]["p95"] == round(histogram_percentile(overall, 0.95), 1)


def test_budget_burn_down_spent_and_projected_in_the_current_period(staff_client, db):
    org = org_create("initech")
    key = key_create(project_create(team_create(org, "core"))).key
    now = datetime.now(UTC)
    today = period_window("daily", now)
    month = period_window("monthly", now)
    rollup(today.start, key, model="gpt-4o-mini", cost="1", requests=1)
    yesterday = today.start - timedelta(hours=1)
    rollup(yesterday, key, model="gpt-4o-mini", cost="7", requests=1)
    daily = Budget.objects.create(key=key, limit_usd=Decimal("5"), period="daily")
    monthly = Budget.objects.create(organization=org, limit_usd=Decimal("100"), period="monthly")
    total = Budget.objects.create(organization=org, limit_usd=Decimal("50"), period="total")
    Budget.objects.create(organization=org_create("elsewhere"), limit_usd=1, period="daily")

    payload = data(staff_client, "budgets", org=org.pk)
    assert payload["count"] == 3  # the other organisation's budget is not in scope
    by_id = {b["budget_id"]: b for b in payload["budgets"]}
    assert Decimal(by_id[daily.pk]["spent_usd"]) == 1
    assert by_id[daily.pk]["percent_used"] == 20.0
    assert by_id[daily.pk]["level"] == "key"
    in_month = Decimal(1) + (Decimal(7) if yesterday >= month.start else 0)
    assert Decimal(by_id[monthly.pk]["spent_usd"]) == in_month
    assert Decimal(by_id[total.pk]["spent_usd"]) == 8
    assert by_id[total.pk]["projected_usd"] is None  # a total budget never ends
    # Most used first: 20 % (daily), 16 % (total), then the month's 1 or 8 %.
    assert [b["budget_id"] for b in payload["budgets"]] == [daily.pk, total.pk, monthly.pk]

    # The projection: spend so far over the time elapsed, times the period's length.
    noon = today.start + timedelta(hours=12)
    [row] = [b for b in budget_burn(org.pk, now=noon)["budgets"] if b["budget_id"] == daily.pk]
    assert Decimal(row["projected_usd"]) == Decimal(2)
    assert row["projected_percent"] == 40.0


def test_findings_by_type_from_a_bounded_recent_window(staff_client, seeded):
    for types in ("pii,secrets", "pii,secrets", "pii", "prompt_injection", "", ""):
        finding_log(seeded.acme, types)
    finding_log(seeded.globex, "secrets")
    finding_log(seeded.acme, "pii", minutes_ago=60 * 24 * 3)  # outside 24 h

    payload = data(staff_client, "findings", range="24h", org=seeded.acme.pk)
    assert payload["source"] == "request_log"
    assert payload["scanned"] == 6 and payload["capped"] is False
    assert payload["types"] == [
        {"type": "pii", "requests": 3},
        {"type": "secrets", "requests": 2},
        {"type": "prompt_injection", "requests": 1},
    ]
    # The scan stops at its limit: only the most recent records count.
    finding_log(seeded.acme, "jailbreak", minutes_ago=1)
    capped = findings_by_type(
        dashboard_scope(range_name="24h", organization_id=seeded.acme.pk), scan_limit=1
    )
    assert capped["capped"] is True
    assert capped["types"] == [{"type": "jailbreak", "requests": 1}]


def test_recent_records_for_the_live_feed(staff_client, seeded):
    finding_log(seeded.acme, "", minutes_ago=2)
    newest = finding_log(seeded.acme, "pii", minutes_ago=1)
    finding_log(seeded.globex, "", minutes_ago=0)
    records = data(staff_client, "recent", org=seeded.acme.pk)["records"]
    assert len(records) == 2
    assert records[0]["request_id"] == newest.request_id
    assert records[0]["status"] == 400 and records[0]["model"] == "gpt-4o-mini"
    assert set(records[0]) == {
        "request_id",
        "time",
        "organization_id",
        "team_id",
        "project_id",
        "key_prefix",
        "model",
        "status",
        "latency_ms",
        "cost_usd",
    }


def test_bad_parameters_are_refused(staff_client, db):
    assert staff_client.get(reverse("dashboard:data", args=["overview"]), {"range": "1y"}).json()[
        "error"
    ] == {"range": ["use one of 24h, 7d, 30d"]}
    assert (
        staff_client.get(reverse("dashboard:data", args=["spend-team"]), {"org": "x"}).status_code
        == 400
    )
    assert staff_client.get(reverse("dashboard:data", args=["nope"])).status_code == 404


# --- Who may see it -------------------------------------------------------------------


@pytest.mark.parametrize("chart", ["overview", "spend-team", "budgets", "findings", "recent"])
def test_json_refuses_anonymous_and_people_without_a_spend_role(client, seeded, chart):
    url = reverse("dashboard:data", args=[chart])
    assert client.get(url).status_code == 403
    client.force_login(make_user("customer", staff=False))
    response = client.get(url)
    assert response.status_code == 403
    assert response.json() == {"error": "no spend role: the dashboard shows nothing"}
    assert "total_usd" not in response.content.decode()


def test_page_is_for_spend_roles_and_linked_from_the_admin_index(client, seeded):
    page = reverse("dashboard:index")
    response = client.get(page)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(make_user("customer", staff=False))
    assert client.get(page).status_code == 403
    client.force_login(make_user("bare-staff", staff=True))  # staff, but no role
    assert client.get(page).status_code == 403

    client.force_login(make_user("staffer", staff=True, role=Role.PLATFORM_ADMIN))
    html = client.get(page).content.decode()
    for canvas in ("chart-spend-team", "chart-spend-model", "chart-top-keys", "chart-rates"):
        assert f'id="{canvas}"' in html
    assert 'id="chart-latency"' in html and 'id="chart-budgets"' in html
    assert 'id="chart-findings"' in html and 'id="live-feed"' in html
    assert f'<option value="{seeded.acme.pk}">acme</option>' in html
    # The chart library is served from our static files, never a CDN.
    assert f"{settings.STATIC_URL}dashboard/vendor/chart.umd.min.js" in html
    assert "cdn" not in html.lower()
    index = client.get(reverse("admin:index")).content.decode()
    assert f'href="{page}"' in index


def test_vendored_chart_library_carries_its_licence():
    vendor = settings.BASE_DIR / "static" / "dashboard" / "vendor"
    head = (vendor / "chart.umd.min.js").read_text()[:300]
    assert "Chart.js v4" in head and "MIT License" in head
    assert "MIT License" in (vendor / "chart.js-LICENSE.md").read_text()
