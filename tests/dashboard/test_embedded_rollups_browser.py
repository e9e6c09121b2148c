"""Issue 16 item 2 in a real headless browser: the demo's embedded default (SQLite under a
fresh var dir, no Redis, no Celery worker, ``manage.py odock_demo``, the gateway under
uvicorn as ``make run`` starts it) rolls its traffic up by itself. Within a minute of the
requests the dashboard shows them, and the spend report for the current month (its
default) totals exactly what the request log holds — at 1366×768 and 1920×1080, with
screenshots under $ODOCK_VAR_DIR/screenshots.

The truth is read from the gateway's own SQLite file (the request log), not from the
pages; money is compared as ``apps.core.money`` formats it, and the page's JavaScript
formatter is held equal to the server's."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from apps.core.money import usd_display, usd_exact
from tests.embedded import embedded_gateway, request_log_totals

CHROMIUM = "/usr/bin/chromium"
REQUESTS = 12
VIEWPORTS = [(1366, 768), (1920, 1080)]
MONEY_CASES = [
    "0",
    "0.00000495000000000000",
    "0.0375",
    "0.5",
    "0.9996",
    "12.345",
    "1234567.891",
    "-1.5",
    "5e-7",
]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"Debian's chromium is not installed at {CHROMIUM}"
)


@pytest.fixture
def embedded_demo(tmp_path):
    """The demo as `make run` sets it up (default scheduler settings)."""
    with embedded_gateway(tmp_path) as demo:
        yield demo


def _login(page, url: str, next_path: str) -> None:
    page.goto(f"{url}/admin/login/?next={next_path}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "odock-admin")
    page.click("input[type=submit]")


def _shot(page, name: str) -> Path:
    from django.conf import settings

    directory = Path(settings.VAR_DIR) / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def test_demo_traffic_reaches_the_dashboard_and_the_spend_report_within_a_minute(
    embedded_demo,
):
    from playwright.sync_api import sync_playwright

    url, key, db = embedded_demo
    for i in range(REQUESTS):
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "demo-model", "messages": [{"role": "user", "content": f"hi {i}"}]},
            timeout=15,
        )
        assert reply.status_code == 200, reply.text
    traffic_done = time.monotonic()
    # Records reach the database from the audit log shortly after their responses.
    deadline = time.monotonic() + 15
    count, total = request_log_totals(db)
    while count < REQUESTS and time.monotonic() < deadline:
        time.sleep(0.1)
        count, total = request_log_totals(db)
    assert count == REQUESTS and total > 0

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            for width, height in VIEWPORTS:
                page = browser.new_page(viewport={"width": width, "height": height})
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))

                # The dashboard, opened right away: the scheduler rolls up within 30 s and
                # the page reloads its charts every 15 s, so no reload by hand.
                _login(page, url, "/admin/dashboard/")
                page.wait_for_selector('body[data-dashboard-ready="1"]', timeout=15_000)
                page.wait_for_function(
                    f"document.getElementById('kpi-requests').textContent === '{count}'",
                    timeout=70_000,
                )
                shown_after = time.monotonic() - traffic_done
                assert shown_after < 60, f"the dashboard showed the traffic after {shown_after}s"
                assert page.text_content("#kpi-spend") == usd_display(total)
                assert page.get_attribute("#kpi-spend", "data-total-usd") == usd_exact(total)
                assert "the current hour so far" in page.text_content("#dash-asof")
                spend_by_model = page.evaluate(
                    "Chart.getChart(document.getElementById('chart-spend-model'))"
                    ".data.datasets.map(d => d.label)"
                )
                assert spend_by_model == ["demo-model"]
                # The page's formatter is the server's, digit for digit.
                assert page.evaluate(f"{MONEY_CASES!r}.map(v => window.odockUsd(v))") == [
                    usd_display(v) for v in MONEY_CASES
                ]
                _shot(page, f"embedded-dashboard-{width}x{height}.png")

                # The spend report: its default range is this month so far.
                page.goto(f"{url}/admin/reports/spendreport/")
                page.click("#spend-report-form input[type=submit]")
                page.wait_for_selector("#spend-totals")
                totals = [c.text_content() for c in page.query_selector_all("#spend-totals th")]
                assert totals[0] == "Total" and totals[-1] == usd_display(total)
                assert str(count) in totals  # the requests column
                assert page.is_visible("#spend-partial")
                today = page.query_selector("#spend-rows tbody tr.partial td")
                assert today is not None and today.text_content().endswith("(partial)")
                assert "Roll-ups as of" in page.text_content("#spend-freshness")
                _shot(page, f"embedded-spend-report-{width}x{height}.png")

                # The CSV download of the same report holds the exact figure.
                csv_url = page.url + "&format=csv"
                csv_text = page.request.get(csv_url).text()
                total_row = next(r for r in csv_text.splitlines() if r.startswith("TOTAL"))
                assert total_row.split(",")[-1] == usd_exact(total)
                assert errors == []
                page.close()
        finally:
            browser.close()
