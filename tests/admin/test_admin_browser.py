"""The admin in headless Chromium (Debian's, driven by Playwright) on the production ASGI
stack, at 1366×768 and 1920×1080: list pages fit without horizontal scrolling, the
landing page is the dashboard with navigation in hierarchy order, a key's page revokes
and rotates, and a team's add page takes its budget. Screenshots are kept under
``$ODOCK_VAR_DIR/screenshots/admin-ui-*.png`` to check by eye.

Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls:
every database write happens before the browser starts, every check of the database
after it closed."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.identity.models import Role
from apps.keys.models import VirtualKey
from apps.keys.services import key_secret_matches
from apps.policies.models import Budget
from apps.tenancy.models import Team
from tests.conftest import ServerThread
from tests.dashboard.conftest import make_user
from tests.factories import key_create, model_create, org_create, project_create, team_create

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "pw-dash-123456"  # make_user's
VIEWPORTS = {"1366": (1366, 768), "1920": (1920, 1080)}
SECRET = re.compile(r"sk-odock-[A-Za-z0-9_-]{20,}")

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"Debian's chromium is not installed at {CHROMIUM}"
)

# How wide the page and the list's table area are, against what the window shows.
OVERFLOW = """() => {
    const doc = document.documentElement;
    const results = document.querySelector('#changelist .results') || doc;
    const content = document.querySelector('#content') || doc;
    return {
        doc: [doc.scrollWidth, doc.clientWidth],
        content: [content.scrollWidth, content.clientWidth],
        results: [results.scrollWidth, results.clientWidth],
    };
}"""


@dataclass
class Site:
    url: str
    key: VirtualKey
    org_pk: int


@pytest.fixture
def site(transactional_db, monkeypatch, fake_upstream) -> Iterator[Site]:
    """A platform admin, a hierarchy with long names, 25 request records and a catalog,
    then the production ASGI stack on loopback."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application
    from django.db import connections

    from odock.asgi_router import build_application
    from odock.gateway import build_gateway
    from tests.factories import provider_create

    make_user("ops", staff=True, superuser=True, role=Role.PLATFORM_ADMIN)
    org = org_create("acme-international-holdings")
    team = team_create(org, "search-relevance-and-ranking")
    project = project_create(team, "assistant-production-eu-west")
    key = key_create(project, "assistant-production-backend-service").key
    Budget.objects.create(team=team, limit_usd=Decimal("100"), period="monthly")
    Budget.objects.create(key=key, limit_usd=Decimal("5"), period="daily")
    provider = provider_create(fake_upstream.url, name="azure-openai-westeurope-primary")
    model_create("gpt-4o-mini-2024-07-18-long-alias", provider, upstream_model="gpt-4o-mini-x")
    now = timezone.now()
    for i in range(25):
        RequestLog.objects.create(
            request_id=f"req_{i:02d}_8f3b2c1d9e7a6b5c4d3e2f1a0b9c8d7e"[:40],
            created_at=now - timedelta(minutes=i),
            organization=org,
            team=team,
            project=project,
            key=key,
            key_prefix=key.prefix,
            endpoint="chat.completions",
            model_requested="gpt-4o-mini-2024-07-18-long-alias",
            status_code=200 if i % 4 else 429,
            error_code="" if i % 4 else "budget_exceeded_at_team_level",
            finding_types="pii,secrets,prompt_injection" if i % 5 == 0 else "",
            cost_usd=Decimal("0.000004950000") * (i + 1),
            latency_ms=8.572397000079945 + i * 123.4567,
            upstream_ms=7.123456789,
            overhead_ms=1.448940211079945,
        )

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    gateway = build_gateway()
    server = ServerThread(
        build_application(gateway, ASGIStaticFilesHandler(get_asgi_application()))
    ).start()
    yield Site(server.url, key, org.pk)
    server.stop()


def in_thread(check):
    """Run ``check`` (ORM reads) off this thread, where Playwright's loop runs."""
    from django.db import connection

    def run() -> None:
        try:
            check()
        finally:
            connection.close()  # this thread's own; left open it blocks the teardown

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()


def keep(page, name: str) -> Path:
    folder = Path(os.environ.get("ODOCK_VAR_DIR", "/tmp/odock-var")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / f"admin-ui-{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    return shot


def login(page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state("domcontentloaded")


def assert_fits(page, what: str) -> None:
    widths = page.evaluate(OVERFLOW)
    for area, (scroll, client) in widths.items():
        assert scroll <= client + 1, f"{what}: {area} is {scroll} px wide in {client} px"


@pytest.fixture
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_list_pages_fit_without_horizontal_scroll(site, browser, size):
    width, height = VIEWPORTS[size]
    page = browser.new_page(viewport={"width": width, "height": height})
    login(page, site.url)

    page.goto(f"{site.url}/admin/audit/requestlog/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() >= 20
    text = page.text_content("#result_list")
    assert "8.6" in text and "8.572397" not in text  # latency in ms, sensible precision
    assert "$0.000005" in text and "0.000004950000" not in text
    assert "budget_exceeded_at_team_level" in text
    assert "pii, secrets, prompt_injection" in text
    assert_fits(page, f"request log at {size}")
    keep(page, f"requestlog-{size}")

    for name, path in (
        ("keys", "/admin/keys/virtualkey/"),
        ("models", "/admin/providers/model/"),
        ("deployments", "/admin/providers/deployment/"),
        ("budgets", "/admin/policies/budget/"),
        ("teams", "/admin/tenancy/team/"),
    ):
        page.goto(f"{site.url}{path}")
        assert page.locator("#result_list tbody tr").count() >= 1, name
        assert_fits(page, f"{name} at {size}")
        keep(page, f"{name}-{size}")
    budgets = page.goto(f"{site.url}/admin/policies/budget/")
    assert budgets.ok and "$100.00" in page.text_content("#result_list")
    assert "100.000000" not in page.content()

    # A record's page: the timings people read, in milliseconds.
    page.goto(f"{site.url}/admin/audit/requestlog/")
    page.click("#result_list tbody tr:first-child th a")  # the newest: 8.57 ms
    page.wait_for_load_state("domcontentloaded")
    detail = page.text_content("#content-main")
    assert "8.6" in detail and "7.1" in detail and "1.4" in detail
    assert "8.572397000079945" not in detail and "1.448940211079945" not in detail
    keep(page, f"requestlog-detail-{size}")


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_landing_page_is_the_dashboard_with_hierarchy_navigation(site, browser, size):
    width, height = VIEWPORTS[size]
    page = browser.new_page(viewport={"width": width, "height": height})
    login(page, site.url)

    assert page.url.endswith("/admin/")
    page.wait_for_selector("#chart-spend-team")  # the dashboard's charts, right here
    nav = [t.strip() for t in page.locator("#odock-nav > ul > li > a").all_text_contents()]
    assert nav[:5] == ["Dashboard", "Organizations", "Teams", "Projects", "Keys"]
    order = [nav.index(s) for s in ("Policies", "Providers", "Audit", "Reports", "Compliance")]
    assert order == sorted(order)
    assert_fits(page, f"dashboard at {size}")
    keep(page, f"landing-{size}")

    # "View site" opens something useful, not a 404.
    view_site = page.locator("#user-tools a", has_text="View site").get_attribute("href")
    response = page.goto(f"{site.url}{view_site}")
    assert response.status == 200 and page.locator("#chart-spend-team").count() == 1

    # Every section, in the same order, for whoever wants the whole list.
    page.goto(f"{site.url}/admin/sections/")
    captions = page.locator("#content-main caption").all_text_contents()
    assert [c.strip() for c in captions][:3] == ["Hierarchy", "Policies", "Providers"]
    keep(page, f"sections-{size}")


def test_key_page_rotates_and_revokes(site, browser):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    login(page, site.url)
    key_url = f"{site.url}/admin/keys/virtualkey/{site.key.pk}/change/"

    page.goto(key_url)
    spend = page.text_content(".odock-spend-by-level")
    for level in ("Key", "Project", "Team", "Organisation"):
        assert level in spend
    assert "$100.00 monthly" in spend and "$5.00 daily" in spend
    keep(page, "key-page")

    page.click("#odock-key-rotate")
    assert "/rotate/" in page.url and "Rotate key" in page.text_content("#content")
    page.click("#odock-confirm-rotate")
    page.wait_for_load_state("domcontentloaded")
    [secret] = set(SECRET.findall(page.content()))
    keep(page, "key-rotated")
    page.goto(key_url)
    assert secret not in page.content()  # shown once, never again

    page.click("#odock-key-revoke")
    page.click("#odock-confirm-revoke")
    page.wait_for_load_state("domcontentloaded")
    assert page.url == key_url
    assert "Revoked key" in page.text_content(".messagelist")
    assert page.locator("#odock-key-revoke").count() == 0  # a revoked key has no buttons
    keep(page, "key-revoked")

    # A rotation is a POST: the confirmation page alone changes nothing.
    page.goto(f"{site.url}/admin/keys/virtualkey/{site.key.pk}/rotate/")

    def check() -> None:
        key = VirtualKey.objects.get(pk=site.key.pk)
        assert key.revoked_at is not None
        assert key_secret_matches(key=key, secret=secret)

    in_thread(check)


def test_team_add_page_takes_a_budget(site, browser):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    login(page, site.url)

    page.goto(f"{site.url}/admin/tenancy/team/add/")
    page.fill("#id_name", "growth")
    page.click("#id_organization + .select2 .select2-selection")
    page.fill(".select2-search__field", "acme")
    page.wait_for_selector(".select2-results__option--highlighted")
    page.keyboard.press("Enter")
    page.fill("#id_budget-0-limit_usd", "100")
    page.fill("#id_budget-0-alert_thresholds", "50, 90")
    keep(page, "team-add")
    page.click("input[name=_save]")
    page.wait_for_load_state("domcontentloaded")
    assert "was added successfully" in page.text_content(".messagelist")
    keep(page, "team-added")

    def check() -> None:
        team = Team.objects.get(name="growth", organization_id=site.org_pk)
        budget = Budget.objects.get(team=team)
        assert budget.limit_usd == Decimal("100") and budget.alert_thresholds == [50, 90]

    in_thread(check)
