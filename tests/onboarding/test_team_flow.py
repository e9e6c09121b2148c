"""The "new team" flow over real HTTP (uvicorn on loopback, signed-in sessions, CSRF):
what it creates, that it is all-or-nothing, who may use it and where, the change trail,
and a key that works through the gateway with a secret shown exactly once."""

from __future__ import annotations

import logging
from decimal import Decimal

import httpx
import pytest

from apps.compliance.models import ConfigChange
from apps.identity.models import Role
from apps.keys.models import VirtualKey
from apps.keys.services import key_secret_matches
from apps.policies.models import Budget, RateLimit
from apps.tenancy.models import Project, Team
from tests.factories import model_create, org_create, provider_create, team_create
from tests.onboarding.conftest import chat_with_key, csrf_token

URL = "/admin/onboarding/new-team/"


def form(org, **values) -> dict[str, str]:
    return {
        "organization": str(org.pk),
        "team_name": "research",
        "monthly_budget_usd": "100",
        "rpm": "60",
        "project_name": "assistant",
        "key_name": "assistant-prod",
        **values,
    }


def written() -> tuple[int, int, int, int, int, int]:
    """Every row kind the flow writes, counted (for "nothing was written")."""
    return (
        Team.objects.count(),
        Budget.objects.count(),
        RateLimit.objects.count(),
        Project.objects.count(),
        VirtualKey.objects.count(),
        ConfigChange.objects.count(),
    )


@pytest.fixture
def acme(transactional_db):
    return org_create("acme")


def test_an_org_admin_creates_a_team_whose_key_works(
    live_site, sign_in, acme, fake_upstream, caplog
):
    caplog.set_level(logging.DEBUG)
    model_create("gpt-4o-mini", provider_create(fake_upstream.url))
    alice = sign_in("alice", role=Role.ORG_ADMIN, organization=acme)
    before_trail = ConfigChange.objects.count()

    page = alice.get(URL)
    assert page.status_code == 200
    assert f'<option value="{acme.pk}" selected>acme</option>' in page.text  # its only org

    answer = alice.submit(URL, form(acme))
    assert answer.status_code == 200, answer.text[:2000]
    assert "no-store" in answer.headers["cache-control"]

    team = Team.objects.get(organization=acme, name="research")
    budget = Budget.objects.get(team=team)
    assert (budget.limit_usd, budget.period, budget.hard) == (Decimal("100"), "monthly", True)
    assert RateLimit.objects.get(team=team).rpm == 60
    project = Project.objects.get(team=team, name="assistant")
    key = VirtualKey.objects.get(project=project, name="assistant-prod")

    # The secret: on this page, in the show-once field, matching the stored digest.
    secret = answer.text.split('id="odock-key-secret"', 1)[1].split('value="', 1)[1]
    secret = secret.split('"', 1)[0]
    assert secret.startswith("sk-odock-") and key_secret_matches(key=key, secret=secret)
    assert "it will not be shown again" in answer.text
    assert 'id="created-budget">100 USD (hard)' in answer.text

    # ... and nowhere else: not on the form again, the key's admin page, the team's.
    for url in (
        URL,
        f"/admin/keys/virtualkey/{key.pk}/change/",
        f"/admin/tenancy/team/{team.pk}/change/",
    ):
        again = alice.get(url)
        assert again.status_code == 200, url
        assert secret not in again.text and key.digest not in again.text

    # The change trail: one "create" per object, by alice as org admin of acme.
    created = ConfigChange.objects.order_by("pk")[before_trail:]
    types = sorted(c.object_type for c in created)
    assert types == [
        "keys.virtualkey",
        "policies.budget",
        "policies.ratelimit",
        "tenancy.project",
        "tenancy.team",
    ]
    for change in created:
        assert change.action == "create"
        assert change.actor == "alice" and change.actor_role == "org_admin of org:acme"
        assert change.organization_id == acme.pk
        assert secret not in str(change.changes)

    # The key works through the gateway (its snapshot reloads within a second or so).
    reply = chat_with_key(live_site, secret, "gpt-4o-mini")
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]

    assert secret not in caplog.text  # never in a log line


def test_the_rate_limit_is_optional(live_site, sign_in, acme):
    alice = sign_in("alice", role=Role.ORG_ADMIN, organization=acme)
    answer = alice.submit(URL, form(acme, rpm=""))
    assert answer.status_code == 200 and 'id="odock-key-secret"' in answer.text
    team = Team.objects.get(name="research")
    assert not RateLimit.objects.filter(team=team).exists()
    assert "none (the organisation" in answer.text


@pytest.mark.parametrize(
    ("values", "field_error"),
    [
        ({"monthly_budget_usd": "abc"}, "Enter a number."),
        ({"monthly_budget_usd": "-5"}, "greater than or equal to 0.01"),
        ({"monthly_budget_usd": "0"}, "greater than or equal to 0.01"),
        ({"monthly_budget_usd": "NaN"}, "Enter a number."),
        ({"monthly_budget_usd": "1e400"}, "no more than 14 digits in total"),
        ({"monthly_budget_usd": "1e10"}, "no more than 8 digits before the decimal point"),
        ({"monthly_budget_usd": ""}, "This field is required."),
        ({"rpm": "0"}, "greater than or equal to 1"),
        ({"team_name": "has spaces"}, "Enter a valid “slug”"),
        ({"key_name": ""}, "This field is required."),
    ],
)
def test_bad_input_writes_nothing_and_says_why(live_site, sign_in, acme, values, field_error):
    alice = sign_in("alice", role=Role.ORG_ADMIN, organization=acme)
    before = written()
    answer = alice.submit(URL, form(acme, **values))
    assert answer.status_code == 200
    assert field_error in answer.text
    assert "Nothing was created." in answer.text
    assert 'id="odock-key-secret"' not in answer.text
    assert written() == before


def test_a_duplicate_team_name_writes_nothing(live_site, sign_in, acme):
    team_create(acme, "research")
    alice = sign_in("alice", role=Role.ORG_ADMIN, organization=acme)
    before = written()
    answer = alice.submit(URL, form(acme))
    assert answer.status_code == 200
    assert "acme already has a team named &#x27;research&#x27;." in answer.text
    assert written() == before


def test_a_budget_looser_than_the_organisations_writes_nothing(live_site, sign_in, acme):
    """The team row is saved before its budget is checked against the organisation's:
    the refusal must take the team (and its trail row) back with it."""
    Budget.objects.create(organization=acme, limit_usd=Decimal("100"), period="monthly")
    alice = sign_in("alice", role=Role.ORG_ADMIN, organization=acme)
    before = written()
    answer = alice.submit(URL, form(acme, monthly_budget_usd="500"))
    assert answer.status_code == 200
    assert (
        "limit_usd 500 is looser than org:acme&#x27;s monthly budget of 100.00 USD "
        "(a child&#x27;s limit can only be tighter)" in answer.text
    )
    assert written() == before
    # The same budget at the organisation's limit is fine.
    assert 'id="odock-key-secret"' in alice.submit(URL, form(acme, monthly_budget_usd="100")).text


def test_a_rate_limit_looser_than_the_organisations_writes_nothing(live_site, sign_in, acme):
    RateLimit.objects.create(organization=acme, rpm=30)
    alice = sign_in("alice", role=Role.ORG_ADMIN, organization=acme)
    before = written()
    answer = alice.submit(URL, form(acme, rpm="60"))
    assert "rpm 60 is looser than org:acme&#x27;s rate limit of 30 requests per minute" in (
        answer.text
    )
    assert written() == before


def test_an_org_admin_cannot_create_a_team_in_another_organisation(live_site, sign_in, acme):
    globex = org_create("globex")
    alice = sign_in("alice", role=Role.ORG_ADMIN, organization=acme)
    page = alice.get(URL)
    assert "globex" not in page.text
    before = written()
    answer = alice.submit(URL, form(globex))
    assert answer.status_code == 200
    assert "You may not create teams in that organisation" in answer.text
    assert written() == before
    assert not Team.objects.filter(organization=globex).exists()


def test_a_platform_admin_picks_any_organisation(live_site, sign_in, acme):
    globex = org_create("globex")
    root = sign_in("root", role=Role.PLATFORM_ADMIN)
    page = root.get(URL)
    assert ">acme</option>" in page.text and ">globex</option>" in page.text
    assert '<option value="" selected>Choose an organisation</option>' in page.text
    before = written()
    unchosen = root.submit(URL, form(globex, organization=""))
    assert "This field is required." in unchosen.text and written() == before
    answer = root.submit(URL, form(globex))
    assert 'id="odock-key-secret"' in answer.text
    assert Team.objects.filter(organization=globex, name="research").exists()
    change = ConfigChange.objects.get(object_type="tenancy.team")
    assert (change.actor, change.actor_role) == ("root", "platform_admin")


@pytest.mark.parametrize("role", [Role.TEAM_ADMIN, Role.FINANCE, Role.AUDITOR])
def test_roles_that_do_not_manage_the_organisation_are_refused(live_site, sign_in, acme, role):
    """A team admin manages its team's subtree, not its organisation: no sibling teams."""
    search = team_create(acme, "search")
    where = {"team": search} if role == Role.TEAM_ADMIN else {"organization": acme}
    person = sign_in("bob", role=role, **where)
    assert person.get(URL).status_code == 403
    # A POST with a valid CSRF token (from another admin page) is refused just the same.
    before = written()
    token = csrf_token(person.get("/admin/password_change/").text)
    answer = person.http.post(URL, data={"csrfmiddlewaretoken": token, **form(acme)})
    assert answer.status_code == 403
    assert written() == before


def test_signed_out_visitors_go_to_the_login_and_a_post_needs_its_csrf_token(
    live_site, sign_in, acme
):
    anonymous = httpx.get(f"{live_site}{URL}", follow_redirects=False)
    assert anonymous.status_code == 302
    assert anonymous.headers["location"].startswith("/admin/login/?next=")

    alice = sign_in("alice", role=Role.ORG_ADMIN, organization=acme)
    before = written()
    forged = alice.http.post(URL, data=form(acme))  # no CSRF token
    assert forged.status_code == 403
    assert written() == before
