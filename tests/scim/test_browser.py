"""SCIM set-up in a real headless browser, as an organisation admin would do it: issue a
SCIM token in the admin (its secret shown once), let an identity provider (this test,
over HTTP with that token) push a person and a group, map the group to *team admin* of
one team, and see the membership appear. Screenshots are kept for a human to look at.

Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls,
so the database is prepared before the browser starts and checked after it closes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from apps.identity.models import Membership, Role
from tests.conftest import ServerThread
from tests.factories import org_create, team_create
from tests.scim.conftest import GROUP_URN, USER_URN

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "pw-scim-browser-4821"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"Debian's chromium is not installed at {CHROMIUM}"
)


@pytest.fixture
def live_site(transactional_db, monkeypatch) -> Iterator[str]:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application
    from django.db import connections

    from odock.asgi_router import build_application
    from odock.gateway import build_gateway

    # One connection per request thread, closed after it (see tests/dashboard).
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    server = ServerThread(
        build_application(build_gateway(), ASGIStaticFilesHandler(get_asgi_application()))
    ).start()
    yield server.url
    server.stop()


def _shot(page, name: str) -> Path:
    path = Path(settings.VAR_DIR) / "screenshots" / f"scim-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def test_an_org_admin_issues_a_token_and_maps_a_pushed_group(live_site):
    from playwright.sync_api import sync_playwright

    acme = org_create("acme")
    search = team_create(acme, "search")
    globex = org_create("globex")
    alice = get_user_model().objects.create_user("alice", password=PASSWORD, is_staff=True)
    alice.user_permissions.set(Permission.objects.filter(content_type__app_label="scim"))
    Membership.objects.create(user=alice, role=Role.ORG_ADMIN, organization=acme)
    shots: list[Path] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{live_site}/admin/login/?next=/admin/scim/scimtoken/add/")
            page.fill("#id_username", "alice")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector("#id_organization")
            # Only the organisation alice manages is offered.
            options = page.eval_on_selector_all(
                "#id_organization option", "els => els.map(e => e.textContent)"
            )
            assert "acme" in options and "globex" not in options
            page.fill("#id_name", "okta")
            page.select_option("#id_organization", str(acme.pk))
            page.click("input[name=_save]")
            secret = page.input_value("#odock-scim-token-secret")
            assert secret.startswith("odk-scim-")
            shots.append(_shot(page, "token-created"))

            # The identity provider pushes a person and a group with the token.
            scim = httpx.Client(
                base_url=f"{live_site}/scim/v2",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=10,
            )
            ada = scim.post("/Users", json={"schemas": [USER_URN], "userName": "ada"}).json()
            group = scim.post(
                "/Groups",
                json={
                    "schemas": [GROUP_URN],
                    "displayName": "search-admins",
                    "members": [{"value": ada["id"]}],
                },
            )
            assert group.status_code == 201
            scim.close()

            # The token page never shows the secret again.
            page.click("text=I have copied it: go to the token")
            assert secret not in page.content()

            page.goto(f"{live_site}/admin/scim/scimgroup/")
            page.click("text=search-admins")
            page.select_option("#id_role", "team_admin")
            teams = page.eval_on_selector_all(
                "#id_team option", "els => els.map(e => e.value).filter(Boolean)"
            )
            assert teams == [str(search.pk)]  # only acme's teams
            page.select_option("#id_team", str(search.pk))
            shots.append(_shot(page, "group-mapping"))
            page.click("input[name=_save]")
            page.wait_for_selector("ul.messagelist")
            row = page.text_content("#result_list tbody tr")
            assert "search-admins" in row and "Team admin" in row and "team" in row
            shots.append(_shot(page, "groups"))
        finally:
            browser.close()

    ada_user = get_user_model().objects.get(username="ada")
    assert list(
        Membership.objects.filter(user=ada_user).values_list("role", "team_id", "source")
    ) == [("team_admin", search.pk, "scim")]
    assert not Membership.objects.filter(organization=globex).exists()
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
