"""The SSO admin pages over real HTTP: the configuration is platform-admin only and its
client secret is write-only; the claim mapping refuses what SSO must never grant; the
sign-in record is read-only and shows each viewer only their organisation's sign-ins."""

from __future__ import annotations

import re
from contextlib import closing
from datetime import UTC, datetime

import httpx
import pytest
from django.contrib.auth.models import User

from apps.identity.models import Membership, MembershipSource, Role
from apps.sso.models import GroupMapping, OidcProvider, SignInEvent
from tests.factories import org_create, project_create, team_create

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "admin-test-pw-8812"
SECRET = "oidc-client-secret-never-shown-93ad"


def login(site: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=site, timeout=10)
    page = client.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        "/admin/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 302, f"{username} could not sign in"
    return client


def csrf(client: httpx.Client, url: str) -> tuple[str, str]:
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    return page.text, re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def person(username: str, role: str | None = None, **level) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    if role:
        Membership.objects.create(user=user, role=role, **level)
    return user


@pytest.fixture
def world():
    acme, globex = org_create("acme"), org_create("globex")
    search = team_create(acme, "search")
    sso = OidcProvider.objects.create(
        organization=acme, issuer="http://127.0.0.1:9", client_id="odock", client_secret=SECRET
    )
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    for username, org in (("ana", acme), ("gil", globex), ("root", None)):
        SignInEvent.objects.create(
            at=at, username=username, organization=org, method="sso", outcome="success"
        )
    return {"acme": acme, "globex": globex, "search": search, "sso": sso}


def mapping_post(client: httpx.Client, sso: OidcProvider, **row) -> httpx.Response:
    url = f"/admin/sso/oidcprovider/{sso.pk}/change/"
    _, token = csrf(client, url)
    data = {
        "csrfmiddlewaretoken": token,
        "organization": str(sso.organization_id),
        "enabled": "on",
        "issuer": sso.issuer,
        "client_id": sso.client_id,
        "client_secret": "",  # blank: keep the stored one
        "scopes": sso.scopes,
        "groups_claim": "groups",
        "username_claim": "preferred_username",
        "email_claim": "email",
        "allowed_email_domains": "",
        "mappings-TOTAL_FORMS": "1",
        "mappings-INITIAL_FORMS": "0",
        "mappings-MIN_NUM_FORMS": "0",
        "mappings-MAX_NUM_FORMS": "1000",
        **{f"mappings-0-{k}": v for k, v in row.items()},
        "_continue": "1",
    }
    return client.post(url, data=data)


def test_the_client_secret_is_never_shown_and_blank_keeps_it(live_site, world):
    User.objects.create_superuser("root", password=PASSWORD)
    team_create(world["globex"], "globex-team")
    sso = world["sso"]
    with closing(login(live_site, "root")) as client:
        pages = [
            "/admin/sso/oidcprovider/",
            "/admin/sso/oidcprovider/?q=acme",
            "/admin/sso/oidcprovider/add/",
            f"/admin/sso/oidcprovider/{sso.pk}/change/",
            f"/admin/sso/oidcprovider/{sso.pk}/history/",
            f"/admin/sso/oidcprovider/{sso.pk}/delete/",
        ]
        for url in pages:
            page = client.get(url)
            assert page.status_code == 200, url
            assert SECRET not in page.text, url
        change_page = client.get(pages[3]).text
        assert "Set, last changed" in change_page
        # The mapping offers only the organisation's own teams.
        assert (
            ">acme/search<" in change_page
            and "globex" not in change_page.split("Claim mapping", 1)[1]
        )

        saved = mapping_post(
            client, sso, group="search-admins", role="team_admin", team=str(world["search"].pk)
        )
        assert saved.status_code == 302, saved.text[-2000:]
    sso.refresh_from_db()
    assert sso.client_secret == SECRET  # a blank field kept it
    assert [(m.group, m.role, m.team_id) for m in sso.mappings.all()] == [
        ("search-admins", "team_admin", world["search"].pk)
    ]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"group": "g", "role": "platform_admin"}, "Select a valid choice"),
        ({"group": "g", "role": "team_admin"}, "granted at the team level"),
        (
            {"group": "g", "role": "org_admin", "team": "SEARCH"},
            "granted at the organization level",
        ),
        ({"group": "g", "role": "team_admin", "team": "OTHER"}, "Select a valid choice"),
        (
            {"group": "g", "role": "member", "project": "OTHER_PROJECT"},
            "Select a valid choice",
        ),
    ],
)
def test_the_claim_mapping_refuses_what_sso_must_not_grant(live_site, world, row, error):
    User.objects.create_superuser("root", password=PASSWORD)
    other_team = team_create(world["globex"], "ops")
    ids = {
        "SEARCH": str(world["search"].pk),
        "OTHER": str(other_team.pk),
        "OTHER_PROJECT": str(project_create(other_team, "x").pk),
    }
    row = {k: ids.get(v, v) for k, v in row.items()}
    with closing(login(live_site, "root")) as client:
        refused = mapping_post(client, world["sso"], **row)
    assert refused.status_code == 200
    assert error in refused.text
    assert not GroupMapping.objects.exists()  # nothing saved


def test_only_a_platform_admin_sees_or_changes_the_sso_configuration(live_site, world):
    person("olga", Role.ORG_ADMIN, organization=world["acme"])
    with closing(login(live_site, "olga")) as client:
        sso = world["sso"]
        assert client.get("/admin/sso/oidcprovider/").status_code == 403
        assert client.get(f"/admin/sso/oidcprovider/{sso.pk}/change/").status_code == 403
        assert client.get("/admin/sso/oidcprovider/add/").status_code == 403
        assert "OpenID Connect providers" not in client.get("/admin/").text


def sign_in_rows(client: httpx.Client) -> set[str]:
    page = client.get("/admin/sso/signinevent/")
    assert page.status_code == 200
    return {name for name in ("ana", "gil", "root") if f">{name}<" in page.text}


def test_the_sign_in_record_is_scoped_to_the_viewers_organisation(live_site, world):
    User.objects.create_superuser("root-admin", password=PASSWORD)
    person("olga", Role.ORG_ADMIN, organization=world["acme"])
    person("aud", Role.AUDITOR, organization=world["globex"])
    person("fin", Role.FINANCE, organization=world["acme"])
    person("tina", Role.TEAM_ADMIN, team=world["search"])
    gil_event = SignInEvent.objects.get(username="gil")

    with closing(login(live_site, "root-admin")) as client:
        assert sign_in_rows(client) == {"ana", "gil", "root"}
    with closing(login(live_site, "olga")) as client:
        assert sign_in_rows(client) == {"ana"}
        assert client.get(f"/admin/sso/signinevent/{gil_event.pk}/change/").status_code in (
            302,
            403,
            404,
        )
        ana_event = SignInEvent.objects.get(username="ana")
        view = client.get(f"/admin/sso/signinevent/{ana_event.pk}/change/")
        assert view.status_code == 200
        assert 'name="_save"' not in view.text  # read-only
        assert client.get("/admin/sso/signinevent/add/").status_code == 403
        assert client.get(f"/admin/sso/signinevent/{ana_event.pk}/delete/").status_code == 403
    with closing(login(live_site, "aud")) as client:
        assert sign_in_rows(client) == {"gil"}
    for name in ("fin", "tina"):  # no audit grant at an organisation: nothing to see
        with closing(login(live_site, name)) as client:
            assert client.get("/admin/sso/signinevent/").status_code == 403


def test_an_sso_team_admin_manages_exactly_their_team_in_the_admin(live_site, world):
    tina = person("tina")
    Membership.objects.create(
        user=tina, role=Role.TEAM_ADMIN, team=world["search"], source=MembershipSource.SSO
    )
    hidden = team_create(world["globex"], "hidden-team")
    sibling = team_create(world["search"].organization, "sibling-team")
    with closing(login(live_site, "tina")) as client:
        page = client.get("/admin/tenancy/team/")
        assert page.status_code == 200
        assert "search" in page.text
        assert "hidden-team" not in page.text and "sibling-team" not in page.text
        assert client.get(f"/admin/tenancy/team/{world['search'].pk}/change/").status_code == 200
        for team in (hidden, sibling):
            response = client.get(f"/admin/tenancy/team/{team.pk}/change/")
            assert response.status_code in (302, 403, 404)
            assert team.name not in response.text
        assert client.get("/admin/tenancy/organization/").status_code == 403


def test_a_mapping_row_naming_another_organisations_level_is_invalid(world):
    """Whatever the form offers (the add page offers every team), the model refuses."""
    from django.core.exceptions import ValidationError

    ops = team_create(world["globex"], "ops")
    for row in (
        GroupMapping(provider=world["sso"], group="g", role=Role.TEAM_ADMIN, team=ops),
        GroupMapping(
            provider=world["sso"], group="g", role=Role.MEMBER, project=project_create(ops, "x")
        ),
    ):
        with pytest.raises(ValidationError, match="must belong to the provider"):
            row.full_clean()
    GroupMapping(
        provider=world["sso"], group="g", role=Role.TEAM_ADMIN, team=world["search"]
    ).full_clean()


def test_a_mapping_row_is_unique_per_group_role_and_level(world):
    from django.db import IntegrityError, transaction

    search = world["search"]
    rows = [
        {"role": Role.FINANCE},  # the organisation
        {"role": Role.TEAM_ADMIN, "team": search},
        {"role": Role.MEMBER, "project": project_create(search, "dup-web")},
    ]
    for fields in rows:
        GroupMapping.objects.create(provider=world["sso"], group="dup", **fields)
        with pytest.raises(IntegrityError), transaction.atomic():
            GroupMapping.objects.create(provider=world["sso"], group="dup", **fields)
    # The same group and role at another level is another grant.
    GroupMapping.objects.create(provider=world["sso"], group="dup", role=Role.MEMBER)
