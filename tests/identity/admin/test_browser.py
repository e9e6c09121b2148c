"""The scoped admin in headless Chromium (Debian's, driven by Playwright): a team admin and
a member log in through the admin's login page; what each sees is asserted and kept as a
screenshot to check by eye (``$ODOCK_VAR_DIR/screenshots/admin-*.png``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.identity.admin.conftest import PASSWORD, url

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"Debian's chromium is not installed at {CHROMIUM}"
)


def _keep(page, name: str) -> Path:
    folder = Path(os.environ.get("ODOCK_VAR_DIR", "/tmp/odock-var")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / f"admin-{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    return shot


def _login(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state("networkidle")


def test_team_admin_and_member_in_chromium(live_admin, world):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            _login(page, live_admin, "team-admin")
            assert page.url.endswith("/admin/")  # the dashboard: their landing page
            nav = page.text_content("#odock-nav")
            assert "Keys" in nav and "Organizations" not in nav
            _keep(page, "team-admin-landing")
            page.goto(f"{live_admin}/admin/sections/")
            index = page.text_content("#content-main")
            assert "Virtual keys" in index and "Organizations" not in index
            _keep(page, "team-admin-index")

            page.goto(f"{live_admin}{url('keys_virtualkey_changelist')}")
            rows = page.text_content("#result_list")
            assert "search-prod" in rows
            assert "ads-prod" not in rows and "globex-prod" not in rows
            _keep(page, "team-admin-keys")

            page.goto(f"{live_admin}{url('keys_virtualkey_change', world.globex_key.pk)}")
            assert page.url.endswith("/admin/")  # another organisation's key "does not exist"
            assert "globex-prod" not in page.content()

            member = browser.new_page(viewport={"width": 1000, "height": 700})
            _login(member, live_admin, "member")
            assert "/admin/login/" in member.url
            assert "no administrative role" in member.text_content(".errornote")
            _keep(member, "member-refused")
        finally:
            browser.close()
