"""Issue 15's "done means", the SSO half, in headless Chromium against the real
``oidc-provider``: a platform admin (local break-glass login) creates an organisation and a
team, configures the organisation's OpenID Connect provider and maps the group
``search-admins`` to team admin of ``search``; then a person in that group signs in through
the provider's own login and consent pages and lands in the admin. Screenshots of each step
go to $ODOCK_VAR_DIR/screenshots/.

Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls:
the database is written before the browser starts and read after it closed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.identity.models import Membership
from apps.sso.models import GroupMapping, OidcProvider, SignInEvent
from apps.tenancy.models import Team
from tests.sso.conftest import CLIENT_ID, CLIENT_SECRET

CHROMIUM = "/usr/bin/chromium"
ROOT_PASSWORD = "break-glass-pw-5521"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
    ),
]


class Shots:
    def __init__(self) -> None:
        self.folder = Path(settings.VAR_DIR) / "screenshots"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, page, name: str) -> None:
        path = self.folder / f"sso-{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)


def test_a_mapped_group_member_signs_in_through_the_real_provider(live_site, oidc_provider):
    User.objects.create_superuser("root", email="root@odock.example", password=ROOT_PASSWORD)
    oidc_provider.set_account(
        "sam",
        preferred_username="sam",
        email="sam@acme.example",
        email_verified=True,
        groups=["search-admins", "everyone"],
    )
    oidc_provider.set_account(
        "max", preferred_username="max", email="max@acme.example", groups=["marketing"]
    )
    shots = Shots()
    os.environ.setdefault("PLAYWRIGHT_BROWSERS_PATH", "0")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            # 1. The break-glass platform admin signs in with a local password.
            admin = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
            admin.goto(f"{live_site}/admin/login/")
            expect(admin.locator("#sso-form")).to_be_visible()
            shots.take(admin, "admin-login-page")
            admin.fill("#id_username", "root")
            admin.fill("#id_password", ROOT_PASSWORD)
            admin.click("#login-form input[type=submit]")
            expect(admin).to_have_url(f"{live_site}/admin/")

            # 2. An organisation with a team.
            admin.goto(f"{live_site}/admin/tenancy/organization/add/")
            admin.fill("#id_name", "acme")
            admin.fill("#id_display_name", "Acme Corp")
            shots.take(admin, "create-organisation")
            admin.click("input[name=_continue]")
            expect(admin.locator(".messagelist .success")).to_contain_text("acme")
            org_id = admin.url.rstrip("/").split("/")[-2]
            # The organisation's page links nowhere to "add a team": the team page, with
            # the organisation chosen (the autocomplete widget shows it selected).
            admin.goto(f"{live_site}/admin/tenancy/team/add/?organization={org_id}")
            expect(admin.locator("#select2-id_organization-container")).to_contain_text("acme")
            admin.fill("#id_name", "search")
            shots.take(admin, "create-team")
            admin.click("input[name=_save]")
            expect(admin.locator(".messagelist .success")).to_contain_text("search")

            # 3. Its OpenID Connect provider, with search-admins → team admin of search.
            admin.goto(f"{live_site}/admin/sso/oidcprovider/add/")
            admin.select_option("#id_organization", label="acme")
            admin.fill("#id_issuer", oidc_provider.issuer)
            admin.fill("#id_client_id", CLIENT_ID)
            admin.fill("#id_client_secret", CLIENT_SECRET)
            admin.fill("#id_allowed_email_domains", "acme.example")
            admin.fill("input[name=mappings-0-group]", "search-admins")
            admin.select_option("select[name=mappings-0-role]", value="team_admin")
            admin.select_option("select[name=mappings-0-team]", label="acme/search")
            shots.take(admin, "configure-oidc-provider")
            admin.click("input[name=_continue]")
            expect(admin.locator(".messagelist .success")).to_be_visible()
            assert CLIENT_SECRET not in admin.content()
            expect(admin.locator("body")).to_contain_text("Set, last changed")
            shots.take(admin, "oidc-provider-saved")

            # 4. Sam, in a fresh browser, signs in with single sign-on by email.
            person = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
            person.goto(f"{live_site}/admin/login/")
            person.fill("#sso-q", "sam@acme.example")
            person.click("#sso-form input[type=submit]")
            person.wait_for_url(f"{oidc_provider.issuer}/interaction/**")
            expect(person.locator("input[name=login]")).to_be_visible()
            person.fill("input[name=login]", "sam")
            person.fill("input[name=password]", "sam-password-at-the-idp")
            shots.take(person, "provider-login-page")
            person.click("button[type=submit]")
            expect(person.locator("button:has-text('Continue')")).to_be_visible()
            shots.take(person, "provider-consent-page")
            person.click("button:has-text('Continue')")
            person.wait_for_url(f"{live_site}/admin/")
            expect(person.locator("#user-tools")).to_contain_text("sam")
            shots.take(person, "signed-in-admin-index")
            person.goto(f"{live_site}/admin/tenancy/team/")
            shots.take(person, "team-admin-teams-list")
            teams_page_status = person.evaluate("document.title")

            # 5. Max is in no mapped group: the provider signs him in, Odock refuses him.
            outsider = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
            outsider.goto(f"{live_site}/sso/?q=acme")
            outsider.fill("input[name=login]", "max")
            outsider.fill("input[name=password]", "max-password")
            outsider.click("button[type=submit]")
            outsider.click("button:has-text('Continue')")
            expect(outsider.locator("#sso-refused")).to_be_visible()
            expect(outsider.locator(".errornote")).to_contain_text("None of your groups")
            shots.take(outsider, "unmapped-person-refused")
        finally:
            browser.close()

    # What the admin configured, and what the sign-in did.
    sso = OidcProvider.objects.get(organization__name="acme")
    assert sso.client_secret == CLIENT_SECRET  # stored (encrypted) and usable
    [mapping] = GroupMapping.objects.filter(provider=sso)
    assert (mapping.group, mapping.role, mapping.team.name) == (
        "search-admins",
        "team_admin",
        "search",
    )
    sam = User.objects.get(username="sam")
    [membership] = Membership.objects.filter(user=sam)
    search = Team.objects.get(name="search", organization__name="acme")
    assert (membership.role, membership.team, membership.source) == ("team_admin", search, "sso")
    assert sam.is_staff and not sam.is_superuser and not sam.has_usable_password()
    outcomes = list(SignInEvent.objects.order_by("id").values_list("username", "method", "outcome"))
    assert outcomes == [
        ("root", "local", "success"),
        ("sam", "sso", "success"),
        ("max", "sso", "failure"),
    ]
    assert not User.objects.filter(username="max").exists()
    assert teams_page_status  # the page rendered (what it lists is the admin scoping's part)
    for shot in shots.taken:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
