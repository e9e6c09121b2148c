"""The dashboard in a real headless browser: Debian's chromium driven by Playwright logs in
to the admin of a live server (the whole ASGI application under uvicorn, websockets
included), waits for the charts, reads the figures shown, follows a request through the
gateway into the live feed, and keeps a screenshot.

Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls,
so every database write happens before the browser starts."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from apps.identity.models import Role
from apps.policies.models import Budget
from tests.dashboard.conftest import finding_log, make_user
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
)

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "pw-dash-123456"
CANVASES = (
    "chart-spend-team",
    "chart-spend-model",
    "chart-top-keys",
    "chart-rates",
    "chart-latency",
    "chart-budgets",
    "chart-findings",
)

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium; "
    ".ci/run installs it)",
)

PAINTED_PIXELS = """(id) => {
    const canvas = document.getElementById(id);
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
    return painted;
}"""


def chart_labels(page, canvas: str) -> list[str]:
    return page.evaluate(f"Chart.getChart(document.getElementById('{canvas}')).data.labels")


def test_dashboard_in_headless_chromium(live_site, seeded, fake_upstream, tmp_path):
    from playwright.sync_api import sync_playwright

    # Everything the database needs, before the browser's event loop starts.
    staff = make_user("ops", staff=True, role=Role.PLATFORM_ADMIN)
    provider = provider_create(fake_upstream.url, api_key="sk-upstream-secret")
    model_create("gpt-4o-mini", provider)
    live_key = key_create(project_create(seeded.search), "live-demo")  # an acme key
    Budget.objects.create(team=seeded.search, limit_usd=Decimal("10"), period="monthly")
    Budget.objects.create(key=seeded.keys["k3"], limit_usd=Decimal("5"), period="daily")
    for types in ("pii,secrets", "pii", "prompt_injection", ""):
        finding_log(seeded.acme, types)
    acme = str(seeded.acme.pk)
    empty = str(org_create("empty-co").pk)
    shot = tmp_path / "dashboard.png"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{live_site}/admin/login/?next=/admin/dashboard/")
            page.fill("#id_username", staff.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector('body[data-dashboard-ready="1"]', timeout=15_000)

            # The figures of the seeded roll-ups (24 h, every organisation).
            assert page.text_content("#kpi-spend") == "$14.75"
            assert page.get_attribute("#kpi-spend", "data-total-usd") == "14.75"
            assert page.text_content("#kpi-requests") == "39"
            assert page.text_content("#kpi-errors") == f"{7 * 100 / 39:.2f} %"
            for canvas in CANVASES:
                assert page.get_attribute(f"#{canvas}", "data-rendered") == "1", canvas
                assert page.evaluate(PAINTED_PIXELS, canvas) > 500, f"{canvas} is blank"
            teams = page.evaluate(
                "Chart.getChart(document.getElementById('chart-spend-team'))"
                ".data.datasets.map(d => d.label)"
            )
            assert teams == ["globex/other", "acme/ads", "acme/search"]
            assert sorted(chart_labels(page, "chart-budgets")) == [
                "key:ads-bidder (daily)",
                "team:search (monthly)",
            ]
            assert chart_labels(page, "chart-findings") == ["pii", "prompt_injection", "secrets"]

            # The organisation filter (one without any data first), then the range.
            page.select_option("#dash-org", empty)
            page.wait_for_function("document.getElementById('kpi-spend').textContent === '$0.00'")
            page.wait_for_selector('body[data-dashboard-ready="1"]')
            assert page.text_content("#budgets-note") == "No budgets in scope."
            assert page.text_content("#kpi-errors") == "–"
            page.select_option("#dash-org", acme)
            page.wait_for_function("document.getElementById('kpi-spend').textContent === '$4.75'")
            page.wait_for_selector('body[data-dashboard-ready="1"]')
            page.click('.dash-range[data-range="7d"]')
            page.wait_for_function("document.getElementById('kpi-spend').textContent === '$6.75'")
            page.wait_for_selector('body[data-dashboard-ready="1"]')
            assert "range=7d" in page.url and f"org={acme}" in page.url
            # assistant-prod: 1.50 + 2.00 over the week.
            assert chart_labels(page, "chart-top-keys") == [
                "assistant-prod",
                "ads-bidder",
                "assistant-dev",
            ]

            # A request through the gateway shows up in the live feed.
            page.wait_for_selector('#live-status[data-live="open"]', timeout=10_000)
            reply = httpx.post(
                f"{live_site}/v1/chat/completions",
                headers={"Authorization": f"Bearer {live_key.secret}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                timeout=10,
            )
            assert reply.status_code == 200
            row = page.wait_for_selector(
                f'#live-feed tbody tr:has(td:text-is("{live_key.key.prefix}"))', timeout=10_000
            )
            cells = [c.text_content() for c in row.query_selector_all("td")]
            assert cells[2] == "gpt-4o-mini" and cells[3] == "200"
            assert cells[4].endswith(" ms") and cells[5].startswith("$")

            page.screenshot(path=str(shot), full_page=True)
            assert errors == []  # no script error on the way
        finally:
            browser.close()

    assert shot.exists()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 30_000  # a page of charts, not a blank one
    _keep_screenshot(shot, "views-platform-dashboard.png")


def _keep_screenshot(shot, name: str) -> None:
    """Under $ODOCK_VAR_DIR/screenshots/ (to be checked by eye)."""
    from django.conf import settings

    directory = Path(settings.VAR_DIR) / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, directory / name)


def test_a_finance_user_sees_only_their_organisations_spend(
    live_site, seeded, fake_upstream, tmp_path
):
    """The done-means of issue 15: a finance person of acme opens the dashboard and sees
    acme's spend only — the figures are acme's seeded roll-ups (4.75 of the 14.75 spent
    in 24 h), globex is neither in the picker nor in any chart, and a globex request
    never reaches the live feed while an acme one does."""
    from playwright.sync_api import sync_playwright

    finance = make_user("fin", staff=True, role=Role.FINANCE, organization=seeded.acme)
    provider = provider_create(fake_upstream.url, api_key="sk-upstream-secret")
    model_create("gpt-4o-mini", provider)
    acme_key = key_create(project_create(seeded.search), "acme-live")
    globex_key = key_create(project_create(seeded.other), "globex-live")
    Budget.objects.create(organization=seeded.acme, limit_usd=Decimal("50"), period="monthly")
    Budget.objects.create(organization=seeded.globex, limit_usd=Decimal("70"), period="monthly")
    shot = tmp_path / "finance-dashboard.png"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{live_site}/admin/login/?next=/admin/dashboard/")
            page.fill("#id_username", finance.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector('body[data-dashboard-ready="1"]', timeout=15_000)

            # acme's figures: 1.50 + 0.25 + 3.00 over 10 + 5 + 20 requests (globex: 10.00, 4).
            assert page.text_content("#kpi-spend") == "$4.75"
            assert page.get_attribute("#kpi-spend", "data-total-usd") == "4.75"
            assert page.text_content("#kpi-requests") == "35"
            teams = page.evaluate(
                "Chart.getChart(document.getElementById('chart-spend-team'))"
                ".data.datasets.map(d => d.label)"
            )
            assert teams == ["acme/ads", "acme/search"]
            assert chart_labels(page, "chart-top-keys") == [
                "ads-bidder",
                "assistant-prod",
                "assistant-dev",
            ]
            assert chart_labels(page, "chart-budgets") == ["org:acme (monthly)"]
            options = page.eval_on_selector_all("#dash-org option", "os => os.map(o => o.text)")
            assert options == ["All you may see", "acme"]
            assert "globex" not in page.content()

            # The live feed: acme's request arrives, globex's never does.
            page.wait_for_selector('#live-status[data-live="open"]', timeout=10_000)
            for issued in (globex_key, acme_key):
                reply = httpx.post(
                    f"{live_site}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {issued.secret}"},
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                    timeout=10,
                )
                assert reply.status_code == 200
            page.wait_for_selector(
                f'#live-feed tbody tr:has(td:text-is("{acme_key.key.prefix}"))', timeout=10_000
            )
            page.wait_for_timeout(1000)  # longer than the feed's batching, for a stray row
            feed = page.text_content("#live-feed")
            assert globex_key.key.prefix not in feed

            page.screenshot(path=str(shot), full_page=True)
            assert errors == []
        finally:
            browser.close()

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 30_000
    _keep_screenshot(shot, "views-finance-dashboard.png")
