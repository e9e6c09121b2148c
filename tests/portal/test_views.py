"""The portal over real HTTP (live server, httpx signing in with CSRF), both ways: what a
member can do with their own keys, and what they and a person with no membership can
never see or change."""

from __future__ import annotations

from decimal import Decimal

from apps.compliance.models import ConfigChange
from apps.keys.models import VirtualKey
from apps.keys.services import key_secret_matches
from apps.policies.models import Budget, ModelAccess, RateLimit
from apps.portal.models import KeyLifetimeRule
from tests.factories import key_create, request_log_create
from tests.portal.conftest import secret_in

NEW = {"project": "", "name": "ann-cli", "lifetime_days": "30", "budget_period": "monthly"}


def _new(world, **changes) -> dict:
    return {**NEW, "project": str(world.web.pk), **changes}


def test_a_member_mints_a_key_within_the_team_policy(world, browser_for):
    ann = browser_for("ann")
    form = ann.get("/portal/keys/new/")
    assert form.status_code == 200
    assert "acme/search/web" in form.text and "acme/billing/invoices" not in form.text
    assert 'value="gpt-4o-mini"' in form.text and 'value="gpt-4o"' not in form.text

    created = ann.post(
        "/portal/keys/new/",
        _new(world, models="gpt-4o-mini", budget_usd="25", rpm="60"),
    )
    assert created.status_code == 201
    secret = secret_in(created.text)
    key = VirtualKey.objects.get(name="ann-cli")
    assert key.owner == world.people["ann"] and key.project == world.web
    assert key_secret_matches(key=key, secret=secret)
    assert key.expires_at is not None
    assert Budget.objects.get(key=key).limit_usd == Decimal("25")
    assert RateLimit.objects.get(key=key).rpm == 60
    assert [a.model.name for a in ModelAccess.objects.filter(key=key)] == ["gpt-4o-mini"]
    # The change trail names the person behind the key and each of its rules.
    trail = ConfigChange.objects.filter(action="create").exclude(object_type="auth.user")
    assert {(c.object_type, c.actor) for c in trail} >= {
        ("keys.virtualkey", "ann"),
        ("policies.budget", "ann"),
        ("policies.ratelimit", "ann"),
        ("policies.modelaccess", "ann"),
    }

    # The secret is never shown again; the key, its budgets and policy are.
    index = ann.get("/portal/")
    assert index.status_code == 200 and secret not in index.text
    assert 'data-key="ann-cli"' in index.text
    assert "team:search: <strong>100.00</strong> of 100.00 USD monthly" in index.text
    detail = ann.get(f"/portal/keys/{key.pk}/")
    assert detail.status_code == 200 and secret not in detail.text
    assert 'data-level="key:ann-cli"' in detail.text and 'data-level="team:search"' in detail.text
    assert "gpt-4o-mini" in detail.text


def test_a_looser_budget_is_refused_with_the_reason_and_nothing_is_created(world, browser_for):
    ann = browser_for("ann")
    refused = ann.post("/portal/keys/new/", _new(world, budget_usd="500"))
    assert refused.status_code == 400
    assert (
        "limit_usd 500 is looser than team:search&#x27;s monthly budget of 100.00 USD "
        "(a child&#x27;s limit can only be tighter)"
    ) in refused.text
    assert 'id="secret"' not in refused.text
    assert not VirtualKey.objects.filter(name="ann-cli").exists()
    assert not Budget.objects.filter(key__isnull=False).exists()
    assert not ConfigChange.objects.filter(object_type="keys.virtualkey").exists()


def test_other_refusals_create_nothing(world, browser_for):
    KeyLifetimeRule.objects.create(team=world.search, max_key_lifetime_days=7)
    RateLimit.objects.create(organization=world.acme, rpm=100)
    ann = browser_for("ann")
    too_long = ann.post("/portal/keys/new/", _new(world, lifetime_days="30"))
    assert too_long.status_code == 400 and "at most 7 days" in too_long.text
    too_fast = ann.post("/portal/keys/new/", _new(world, lifetime_days="7", rpm="1000"))
    assert too_fast.status_code == 400
    assert "rpm 1000 is looser than org:acme&#x27;s rate limit of 100" in too_fast.text
    # A model the team does not allow is not even a choice.
    forbidden = ann.post("/portal/keys/new/", _new(world, lifetime_days="7", models="gpt-4o"))
    assert forbidden.status_code == 400 and "gpt-4o is not one of the available" in forbidden.text
    # A project she is not a member of is not a choice either.
    elsewhere = ann.post(
        "/portal/keys/new/", _new(world, project=str(world.invoices.pk), lifetime_days="7")
    )
    assert elsewhere.status_code == 400 and "Select a valid choice" in elsewhere.text
    assert not VirtualKey.objects.exists()
    assert not ModelAccess.objects.filter(key__isnull=False).exists()
    # A name taken in the project: refused, the first key untouched.
    assert ann.post("/portal/keys/new/", _new(world, lifetime_days="7")).status_code == 201
    again = ann.post("/portal/keys/new/", _new(world, lifetime_days="7"))
    assert again.status_code == 400 and "already exists" in again.text
    assert VirtualKey.objects.count() == 1


def test_rotate_and_revoke_own_key(world, browser_for):
    ann = browser_for("ann")
    first = secret_in(ann.post("/portal/keys/new/", _new(world)).text)
    key = VirtualKey.objects.get(name="ann-cli")
    rotated = ann.post(f"/portal/keys/{key.pk}/rotate/")
    assert rotated.status_code == 200
    second = secret_in(rotated.text)
    assert second != first and first not in rotated.text
    key.refresh_from_db()
    assert key_secret_matches(key=key, secret=second)
    page = ann.get(f"/portal/keys/{key.pk}/").text
    assert second not in page and first not in page and key.prefix in page
    revoked = ann.post(f"/portal/keys/{key.pk}/revoke/")
    assert revoked.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    again = ann.post(f"/portal/keys/{key.pk}/rotate/")
    assert again.status_code == 409 and "revoked key cannot be rotated" in again.text


def test_another_persons_key_is_404_even_in_the_same_team(world, browser_for):
    bobs = key_create(world.web, "bob-key", owner=world.people["bob"]).key
    request_log_create(bobs, "1.234567")
    Budget.objects.create(key=bobs, limit_usd=Decimal("3.3333"), period="daily")
    ann = browser_for("ann")
    mine = key_create(world.web, "ann-key", owner=world.people["ann"]).key
    request_log_create(mine, "0.5")
    index = ann.get("/portal/")
    assert (
        "bob-key" not in index.text and "3.333" not in index.text and "1.234567" not in index.text
    )
    assert 'id="total-spend">0.50 USD' in index.text
    assert index.text.count("<td>chat.completions</td>") == 1  # her one record only
    for path in (f"/portal/keys/{bobs.pk}/",):
        assert ann.get(path).status_code == 404
    for action in ("revoke", "rotate"):
        assert ann.post(f"/portal/keys/{bobs.pk}/{action}/").status_code == 404
    bobs.refresh_from_db()
    assert bobs.revoked_at is None and bobs.previous_digest is None
    # Bob, for his part, sees his key.
    bob = browser_for("bob")
    assert bob.get(f"/portal/keys/{bobs.pk}/").status_code == 200
    assert bob.get(f"/portal/keys/{mine.pk}/").status_code == 404


def test_a_person_with_no_membership_sees_and_mints_nothing(world, browser_for):
    someones = key_create(world.web, "ann-key", owner=world.people["ann"]).key
    nobody = browser_for("nobody")
    index = nobody.get("/portal/")
    assert index.status_code == 200 and 'id="no-membership"' in index.text
    assert 'id="no-keys"' in index.text and "ann-key" not in index.text
    assert nobody.get("/portal/keys/new/").status_code == 403
    assert nobody.post("/portal/keys/new/", _new(world)).status_code == 403
    assert nobody.get(f"/portal/keys/{someones.pk}/").status_code == 404
    assert nobody.post(f"/portal/keys/{someones.pk}/revoke/").status_code == 404
    assert not VirtualKey.objects.filter(owner=world.people["nobody"]).exists()


def test_sign_in_is_required_and_csrf_is_on(world, browser_for):
    anonymous = browser_for(None)
    page = anonymous.get("/portal/")
    assert page.status_code == 302 and page.headers["location"].startswith("/portal/login/")
    assert anonymous.post("/portal/keys/new/", _new(world)).status_code == 302
    bad = anonymous.login("ann", "wrong-password")
    assert bad.status_code == 200 and "Please enter a correct username" in bad.text
    ann = browser_for("ann")
    forged = ann.post("/portal/keys/new/", _new(world), csrf=False)
    assert forged.status_code == 403
    assert not VirtualKey.objects.exists()
    # Signing out ends the session (POST only).
    assert ann.get("/portal/logout/").status_code == 405
    assert ann.post("/portal/logout/").status_code == 302
    assert ann.get("/portal/").status_code == 302


def test_sso_link_goes_to_the_organisations_sign_in(world, browser_for):
    anonymous = browser_for(None)
    login = anonymous.get("/portal/login/")
    assert 'action="/portal/sso/"' in login.text and "Sign in with SSO" in login.text
    sso = anonymous.get("/portal/sso/", params={"organization": "acme"})
    assert sso.status_code == 302
    assert sso.headers["location"] == "/sso/acme/login/?next=%2Fportal%2F"
    bad = anonymous.get("/portal/sso/", params={"organization": "../admin"})
    assert bad.status_code == 400


def test_member_projects_follow_the_membership_level(world):
    from apps.identity.models import Membership, Role
    from apps.portal.selectors import member_projects
    from tests.factories import project_create, team_create
    from tests.portal.conftest import person

    mobile = project_create(world.search, "mobile")
    solo = person("solo", (Role.MEMBER, {"project": world.invoices}))
    wide = person("wide", (Role.FINANCE, {"organization": world.acme}))
    assert set(member_projects(world.people["ann"])) == {world.web, mobile}
    assert set(member_projects(solo)) == {world.invoices}
    assert set(member_projects(wide)) == {world.web, mobile, world.invoices}
    assert not member_projects(world.people["nobody"]).exists()
    other = project_create(team_create(name="elsewhere"))
    assert other not in set(member_projects(wide))
    mobile.is_active = False
    mobile.save()
    assert set(member_projects(world.people["ann"])) == {world.web}
    Membership.objects.filter(user=solo).delete()
    assert not member_projects(type(solo).objects.get(pk=solo.pk)).exists()
