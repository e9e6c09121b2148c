"""People without an administrative role, over HTTP: a member (who has the portal), a
staff account with no membership (``is_staff`` alone no longer opens the admin), and an
anonymous visitor. None of them gets a single admin page or row."""

from __future__ import annotations

import pytest

from tests.identity.admin.conftest import AdminBrowser, url

PAGES = ("keys_virtualkey_changelist", "audit_requestlog_changelist", "tenancy_team_changelist")


@pytest.mark.parametrize("person", ["member", "nobody"])
def test_the_login_form_refuses_and_says_why(live_admin, world, person):
    browser = AdminBrowser(live_admin)
    try:
        response = browser.login(person)
        assert response.status_code == 200  # the form again, with the reason
        assert "no administrative role" in response.text and "/portal/" in response.text
        for name in PAGES:
            page = browser.get(url(name))
            assert page.status_code == 302 and page.headers["location"].startswith("/admin/login/")
        export = browser.get(url("audit_requestlog_export"), format="csv")
        assert export.status_code == 302 and "req-" not in export.text
    finally:
        browser.close()


def test_a_wrong_password_is_refused_like_before(live_admin, world):
    browser = AdminBrowser(live_admin)
    try:
        response = browser.login("org-admin", "not-the-password")
        assert response.status_code == 200 and "no administrative role" not in response.text
        assert browser.get(url(PAGES[0])).status_code == 302
    finally:
        browser.close()
