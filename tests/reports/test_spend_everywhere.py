"""One spend, shown the same way everywhere (issue 16 item 2), after real traffic through
the gateway with the in-process scheduler rolling it up (real PostgreSQL, uvicorn on
loopback, the fake upstream): the dashboard's JSON and the current month's spend report
total exactly what the request log holds, and a team budget's spend reads the same in the
spend report, on the team's admin page and in the management API — for people by
``usd_display``, for machines by ``usd_exact``."""

from __future__ import annotations

import csv
import io
import re
import time
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.test import Client
from django.urls import reverse

from apps.api.services import admin_token_issue
from apps.audit.models import RequestLog
from apps.core.money import usd_display, usd_exact
from apps.core.scheduler import MachineLock, Scheduler, SchedulerLifespan, jobs_from_beat
from apps.policies.models import Budget
from apps.reports.models import UsageRollup
from apps.reports.selectors import day_range_default
from tests.conftest import ServerThread
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    team_create,
)

REQUESTS = 7
TAG = re.compile(r"<[^>]+>")


def _text(html: str) -> str:
    return " ".join(TAG.sub(" ", html).split())


@pytest.fixture
def site(transactional_db, fake_upstream, tmp_path, settings, monkeypatch):
    """The production ASGI stack plus the in-process scheduler (roll-ups every second)."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application
    from django.db import connections

    from odock.asgi_router import build_application
    from odock.gateway import build_gateway

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    settings.ODOCK_AUDIT_SPOOL_DIR = tmp_path / "audit-spool"
    settings.ODOCK_SNAPSHOT_FILE = tmp_path / "policy-snapshot"
    org = org_create("acme")
    team = team_create(org, "search")
    budget = Budget.objects.create(team=team, limit_usd=Decimal("10"), period="monthly")
    model_create("gpt-4o-mini", provider_create(fake_upstream.url, api_key="sk-upstream-secret"))
    issued = key_create(project_create(team), "assistant")
    scheduler = Scheduler(
        jobs_from_beat(fast_seconds=1), lock=MachineLock(tmp_path / "s.lock"), tick_seconds=0.1
    )
    app = build_application(build_gateway(), ASGIStaticFilesHandler(get_asgi_application()))
    server = ServerThread(SchedulerLifespan(app, scheduler)).start()
    try:
        yield server.url, issued, team, budget
    finally:
        server.stop()


def _session(url: str) -> httpx.Client:
    user = User.objects.create_superuser("finance-admin", password="pw-everywhere-123456")
    client = Client()
    client.force_login(user)
    return httpx.Client(
        base_url=url, cookies={"sessionid": client.cookies["sessionid"].value}, timeout=15
    )


def test_the_same_spend_everywhere_after_traffic(site):
    url, issued, team, budget = site
    for i in range(REQUESTS):
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {issued.secret}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]},
            timeout=15,
        )
        assert reply.status_code == 200
    deadline = time.monotonic() + 10
    while RequestLog.objects.count() < REQUESTS:  # shipped just after the answers
        assert time.monotonic() < deadline, "records not shipped within 10 s"
        time.sleep(0.05)
    raw = RequestLog.objects.aggregate(t=Sum("cost_usd"))["t"]
    assert RequestLog.objects.count() == REQUESTS and 0 < raw < Decimal("0.01")  # sub-cent
    deadline = time.monotonic() + 10
    while (UsageRollup.objects.aggregate(t=Sum("cost_usd"))["t"] or 0) != raw:
        assert time.monotonic() < deadline, "not rolled up within 10 s"
        time.sleep(0.1)

    people, exact = usd_display(raw), usd_exact(raw)
    assert Decimal(exact) == raw and not exact.endswith("0")
    browser = _session(url)

    # The dashboard's JSON: the exact total and the count, the current hour partial.
    overview = browser.get(reverse("dashboard:data", args=["overview"])).json()
    assert (overview["total_usd"], overview["requests"]) == (exact, REQUESTS)
    assert overview["partial_from"] is not None

    # The spend report, this month so far (its default range): page and CSV.
    start, end = day_range_default()
    report_url = reverse("admin:reports_spendreport_changelist")
    params = {"start": start.isoformat(), "end": end.isoformat(), "granularity": "day"}
    page = browser.get(report_url, params={**params, "format": "html"}).text
    assert f"<th>{people}</th>" in page  # the totals row
    spent_cell = re.search(r'<td class="spent">([^<]*)</td>', page)
    assert spent_cell is not None and spent_cell[1] == people  # the team budget's spend
    lines = list(
        csv.reader(io.StringIO(browser.get(report_url, params={**params, "format": "csv"}).text))
    )
    total_row = next(r for r in lines if r and r[0] == "TOTAL")
    assert total_row[-1] == exact and total_row[1] == str(REQUESTS)
    budget_row = next(r for r in lines if len(r) > 8 and r[1] == "team:search")
    assert budget_row[8] == exact  # spent_usd

    # The team's admin page: the same digits, with "USD" after them.
    team_page = _text(browser.get(reverse("admin:tenancy_team_change", args=[team.pk])).text)
    assert f" {usd_display(raw, symbol=False)} USD 10.00 USD " in team_page

    # The management API: the exact figure.
    token = admin_token_issue(name="platform-ops").secret
    spend = httpx.get(
        f"{url}/api/v1/spend",
        params={"team": "search"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    ).json()
    row = next(r for r in spend if r["budget_id"] == budget.pk)
    assert (row["spent_usd"], row["limit_usd"]) == (exact, "10")
    assert row["remaining_usd"] == usd_exact(Decimal(10) - raw)
