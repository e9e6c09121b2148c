"""Single sign-on over real HTTP (httpx following the flow, no browser) against the real
``oidc-provider`` on loopback: provisioning, the claim mapping, every refusal, and the
sign-in record."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from django.contrib.auth.models import User

from apps.identity.models import Membership, MembershipSource, Role
from apps.sso.models import GroupMapping, OidcProvider, SignInEvent, SsoIdentity
from apps.sso.services import SsoRefused, discovery_get, id_token_verify
from tests.factories import org_create, project_create, team_create
from tests.sso.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_CLIENT_ID,
    OTHER_CLIENT_SECRET,
    OTHER_REDIRECT,
    provider_form_action,
    sso_sign_in,
)

pytestmark = pytest.mark.django_db(transaction=True)
ADMIN_PASSWORD = "break-glass-pw-91x"


@pytest.fixture
def acme(oidc_provider):
    org = org_create("acme")
    search = team_create(org, "search")
    ads = team_create(org, "ads")
    sso = OidcProvider.objects.create(
        organization=org,
        issuer=oidc_provider.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    GroupMapping.objects.create(
        provider=sso, group="search-admins", role=Role.TEAM_ADMIN, team=search
    )
    GroupMapping.objects.create(provider=sso, group="ads-admins", role=Role.TEAM_ADMIN, team=ads)
    GroupMapping.objects.create(provider=sso, group="finance", role=Role.FINANCE)
    GroupMapping.objects.create(
        provider=sso, group="devs", role=Role.MEMBER, project=project_create(search, "web")
    )
    return sso


def person(oidc_provider, login: str, *groups: str, email: str = "", verified: bool = True) -> None:
    oidc_provider.set_account(
        login,
        preferred_username=login,
        email=email or f"{login}@acme.example",
        email_verified=verified,
        groups=list(groups),
    )


def memberships(user: User) -> set[tuple[str, str, str]]:
    return {(m.role, m.level, m.source) for m in Membership.objects.filter(user=user)}


def events(**filters) -> list[SignInEvent]:
    return list(SignInEvent.objects.filter(**filters).order_by("id"))


def test_first_sign_in_provisions_the_user_with_the_mapped_role(live_site, oidc_provider, acme):
    person(oidc_provider, "ana", "search-admins", "unrelated-group")
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "ana")
        assert str(page.url) == f"{live_site}/admin/", page.text[:300]
        assert page.status_code == 200

    ana = User.objects.get(username="ana")
    assert ana.email == "ana@acme.example"
    assert not ana.has_usable_password()
    assert ana.is_staff and not ana.is_superuser
    assert memberships(ana) == {("team_admin", "team:acme/search", "sso")}
    assert SsoIdentity.objects.get(user=ana).subject == "ana"
    [event] = events(username="ana")
    assert (event.method, event.outcome, event.organization_id) == (
        "sso",
        "success",
        acme.organization_id,
    )
    assert event.client_ip == "127.0.0.1"


def test_next_sign_in_replaces_sso_memberships_and_keeps_manual_ones(
    live_site, oidc_provider, acme
):
    person(oidc_provider, "bo", "search-admins", "finance")
    with httpx.Client(timeout=10) as client:
        sso_sign_in(client, live_site, "acme", "bo")
    bo = User.objects.get(username="bo")
    assert memberships(bo) == {
        ("team_admin", "team:acme/search", "sso"),
        ("finance", "org:acme", "sso"),
    }
    other_org = org_create("globex")
    Membership.objects.create(user=bo, role=Role.AUDITOR, organization=acme.organization)
    Membership.objects.create(
        user=bo, role=Role.FINANCE, organization=other_org, source=MembershipSource.SSO
    )

    person(oidc_provider, "bo", "ads-admins")  # moved team at the provider
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "bo")
    assert str(page.url) == f"{live_site}/admin/"
    assert memberships(bo) == {
        ("team_admin", "team:acme/ads", "sso"),  # the new mapping
        ("auditor", "org:acme", "manual"),  # kept: granted by an administrator
        ("finance", "org:globex", "sso"),  # kept: another organisation's SSO
    }
    assert User.objects.filter(username="bo").count() == 1


def test_a_member_lands_in_the_portal(live_site, oidc_provider, acme):
    person(oidc_provider, "cy", "devs")
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "cy")
    assert urlsplit(str(page.url)).path == "/portal/"
    cy = User.objects.get(username="cy")
    assert memberships(cy) == {("member", "project:acme/search/web", "sso")}
    assert not cy.is_staff


def test_unmapped_groups_are_refused_and_recorded(live_site, oidc_provider, acme):
    person(oidc_provider, "dee", "marketing")
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "dee")
        assert page.status_code == 403
        assert "None of your groups gives a role in this organisation." in page.text
        assert client.get(f"{live_site}/admin/").status_code == 302  # not signed in
    assert not User.objects.filter(username="dee").exists()
    [event] = events(username="dee")
    assert (event.method, event.outcome, event.reason) == ("sso", "failure", "unmapped_groups")
    assert event.organization_id == acme.organization_id


def test_leaving_every_mapped_group_removes_sso_roles_and_refuses(live_site, oidc_provider, acme):
    person(oidc_provider, "eli", "search-admins")
    with httpx.Client(timeout=10) as client:
        sso_sign_in(client, live_site, "acme", "eli")
    eli = User.objects.get(username="eli")
    Membership.objects.create(user=eli, role=Role.MEMBER, organization=acme.organization)
    person(oidc_provider, "eli")
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "eli")
    assert page.status_code == 403
    assert memberships(eli) == {("member", "org:acme", "manual")}
    eli.refresh_from_db()
    assert not eli.is_staff
    assert events(username="eli")[-1].reason == "unmapped_groups"


def test_an_inactive_user_is_refused(live_site, oidc_provider, acme):
    person(oidc_provider, "fay", "search-admins")
    with httpx.Client(timeout=10) as client:
        sso_sign_in(client, live_site, "acme", "fay")
    User.objects.filter(username="fay").update(is_active=False)
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "fay")
        assert page.status_code == 403
        assert "deactivated" in page.text
    assert events(username="fay")[-1].reason == "inactive_user"


def test_an_existing_local_account_is_never_taken_over(live_site, oidc_provider, acme):
    User.objects.create_superuser("root", password=ADMIN_PASSWORD)
    person(oidc_provider, "root", "search-admins")
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "root")
    assert page.status_code == 403
    assert "already exists" in page.text
    assert not Membership.objects.filter(user__username="root").exists()
    assert events(method="sso", username="root")[-1].reason == "username_taken"


def test_email_domain_outside_the_allowed_ones_is_refused(live_site, oidc_provider, acme):
    acme.allowed_email_domains = "acme.example, acme.test"
    acme.save()
    person(oidc_provider, "gus", "search-admins", email="gus@evil.example")
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "gus")
    assert page.status_code == 403
    assert not User.objects.filter(username="gus").exists()
    assert events(username="gus")[-1].reason == "email_domain_not_allowed"

    # An address the provider has not verified counts as none, even in an allowed domain.
    person(oidc_provider, "ula", "search-admins", email="ula@acme.test", verified=False)
    with httpx.Client(timeout=10) as client:
        assert sso_sign_in(client, live_site, "acme", "ula").status_code == 403
    assert events(username="ula")[-1].reason == "email_domain_not_allowed"
    person(oidc_provider, "vic", "search-admins", email="vic@ACME.test")
    with httpx.Client(timeout=10) as client:
        assert str(sso_sign_in(client, live_site, "acme", "vic").url) == f"{live_site}/admin/"


def test_a_tampered_state_is_refused(live_site, oidc_provider, acme):
    person(oidc_provider, "hal", "search-admins")
    with httpx.Client(timeout=10) as client:
        page = client.get(f"{live_site}/sso/acme/login/", follow_redirects=True)
        page = client.post(
            provider_form_action(page),
            data={"prompt": "login", "login": "hal", "password": "x"},
            follow_redirects=True,
        )
        answer = client.post(
            provider_form_action(page), data={"prompt": "consent"}, follow_redirects=False
        )
        # Follow the provider's redirects by hand until it sends the browser back to Odock.
        while not answer.headers["location"].startswith(f"{live_site}/sso/callback/"):
            answer = client.get(urljoin_(answer), follow_redirects=False)
        callback = answer.headers["location"]
        query = parse_qs(urlsplit(callback).query)
        assert set(query) >= {"code", "state"}
        tampered = f"{live_site}/sso/callback/?" + urlencode(
            {"code": query["code"][0], "state": query["state"][0] + "x"}
        )
        page = client.get(tampered)
        assert page.status_code == 400
        assert "stale or not from this browser" in page.text
        # The state is single use: the real one, replayed after a refusal, still works
        # once, and a second replay is refused.
        assert client.get(callback).status_code == 302
        assert client.get(callback).status_code == 400
    assert [e.reason for e in events(outcome="failure")] == ["bad_state", "bad_state"]
    assert events(username="hal", outcome="success")


def urljoin_(response: httpx.Response) -> str:
    from urllib.parse import urljoin

    return urljoin(str(response.url), response.headers["location"])


def test_a_callback_from_another_browser_is_refused(live_site, oidc_provider, acme):
    """The code and state were issued to one browser; another one replaying them gets nothing."""
    person(oidc_provider, "ivy", "search-admins")
    with httpx.Client(timeout=10) as victim:
        page = victim.get(f"{live_site}/sso/acme/login/", follow_redirects=True)
        page = victim.post(
            provider_form_action(page),
            data={"prompt": "login", "login": "ivy", "password": "x"},
            follow_redirects=True,
        )
        answer = victim.post(provider_form_action(page), data={"prompt": "consent"})
        while not answer.headers["location"].startswith(f"{live_site}/sso/callback/"):
            answer = victim.get(urljoin_(answer))
    with httpx.Client(timeout=10) as attacker:
        page = attacker.get(answer.headers["location"])
        assert page.status_code == 400
    assert not User.objects.filter(username="ivy").exists()


def _other_client_id_token(oidc_provider, login: str, nonce: str) -> str:
    """A real ID token the provider signed, for another client (a different audience)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    metadata = httpx.get(f"{oidc_provider.issuer}/.well-known/openid-configuration").json()
    with httpx.Client(timeout=10) as client:
        page = client.get(
            metadata["authorization_endpoint"],
            params={
                "client_id": OTHER_CLIENT_ID,
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": OTHER_REDIRECT,
                "state": "s",
                "nonce": nonce,
                "code_challenge": challenge.decode(),
                "code_challenge_method": "S256",
            },
            follow_redirects=True,
        )
        page = client.post(
            provider_form_action(page),
            data={"prompt": "login", "login": login, "password": "x"},
            follow_redirects=True,
        )
        answer = client.post(provider_form_action(page), data={"prompt": "consent"})
        while not answer.headers["location"].startswith(OTHER_REDIRECT):
            answer = client.get(urljoin_(answer))
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        tokens = client.post(
            metadata["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": OTHER_REDIRECT,
                "client_id": OTHER_CLIENT_ID,
                "client_secret": OTHER_CLIENT_SECRET,
                "code_verifier": verifier,
            },
        ).json()
    return tokens["id_token"]


def test_id_tokens_for_another_audience_or_issuer_or_nonce_are_refused(oidc_provider, acme):
    person(oidc_provider, "jo", "search-admins")
    token = _other_client_id_token(oidc_provider, "jo", nonce="n-123")
    metadata = discovery_get(acme.issuer)

    with pytest.raises(SsoRefused) as refused:
        id_token_verify(acme, token, nonce="n-123", metadata=metadata)
    assert refused.value.reason == "wrong_audience"

    # The same token is fine for the client it was issued to ...
    acme.client_id = OTHER_CLIENT_ID
    assert id_token_verify(acme, token, nonce="n-123", metadata=metadata)["sub"] == "jo"
    # ... but not with another nonce, nor from an issuer other than the one configured,
    with pytest.raises(SsoRefused) as refused:
        id_token_verify(acme, token, nonce="n-other", metadata=metadata)
    assert refused.value.reason == "bad_nonce"
    with pytest.raises(SsoRefused) as refused:
        id_token_verify(
            acme, token, nonce="n-123", metadata={**metadata, "issuer": "http://127.0.0.1:1"}
        )
    assert refused.value.reason == "wrong_issuer"
    # ... nor with its signature altered (one byte of the payload changed).
    head, payload, signature = token.split(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    with pytest.raises(SsoRefused) as refused:
        id_token_verify(acme, f"{head}.{forged}.{signature}", nonce="n-123", metadata=metadata)
    assert refused.value.reason in {"bad_signature", "bad_token"}


def test_a_provider_naming_another_issuer_is_refused_at_login(live_site, oidc_provider, acme):
    acme.issuer = oidc_provider.issuer.replace("127.0.0.1", "localhost")
    acme.save()
    with httpx.Client(timeout=10) as client:
        page = client.get(f"{live_site}/sso/acme/login/")
    assert page.status_code == 502
    assert "another issuer" in page.text
    assert events()[-1].reason == "issuer_mismatch"


def test_a_wrong_client_secret_is_refused(live_site, oidc_provider, acme):
    acme.client_secret = "not-the-secret"
    acme.save()
    person(oidc_provider, "kim", "search-admins")
    with httpx.Client(timeout=10) as client:
        page = sso_sign_in(client, live_site, "acme", "kim")
    assert page.status_code == 403
    assert events()[-1].reason == "token_exchange_failed"
    assert not User.objects.filter(username="kim").exists()


def test_the_start_page_finds_the_organisation_by_name_or_email_domain(
    live_site, oidc_provider, acme
):
    acme.allowed_email_domains = "acme.example"
    acme.save()
    with httpx.Client(timeout=10, base_url=live_site) as client:
        by_email = client.get("/sso/", params={"q": "lee@ACME.example", "next": "/portal/"})
        assert by_email.status_code == 302
        assert by_email.headers["location"] == "/sso/acme/login/?next=%2Fportal%2F"
        assert client.get("/sso/", params={"q": "acme"}).headers["location"] == "/sso/acme/login/"
        unknown = client.get("/sso/", params={"q": "nobody@else.example"})
        assert unknown.status_code == 404
        assert "No organisation signs in" in unknown.text
        assert client.get("/sso/globex/login/").status_code == 404
        off_site = client.get("/sso/", params={"q": "acme", "next": "https://evil.example/"})
        assert off_site.headers["location"] == "/sso/acme/login/"
        login_page = client.get("/admin/login/")
        assert 'id="sso-form"' in login_page.text and 'id="login-form"' in login_page.text


def _local_login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    page = client.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return client.post(
        "/admin/login/?next=/admin/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
    )


def test_break_glass_local_login_works_and_every_attempt_is_recorded(live_site):
    User.objects.create_superuser("root", password=ADMIN_PASSWORD)
    with httpx.Client(timeout=10, base_url=live_site) as client:
        refused = _local_login(client, "root", "wrong-password")
        assert refused.status_code == 200 and "Please enter the correct" in refused.text
        signed_in = _local_login(client, "root", ADMIN_PASSWORD)
        assert signed_in.status_code == 302 and signed_in.headers["location"] == "/admin/"
        assert client.get("/admin/").status_code == 200
    with httpx.Client(timeout=10, base_url=live_site) as client:
        _local_login(client, "nobody", "whatever-pw")
    rows = [(e.username, e.method, e.outcome, e.reason) for e in events()]
    assert rows == [
        ("root", "local", "failure", "bad_credentials"),
        ("root", "local", "success", ""),
        ("nobody", "local", "failure", "bad_credentials"),
    ]
    assert {e.client_ip for e in events()} == {"127.0.0.1"}
    for field in ("username", "reason"):
        assert not SignInEvent.objects.filter(**{f"{field}__contains": "wrong-password"}).exists()
        assert not SignInEvent.objects.filter(**{f"{field}__contains": ADMIN_PASSWORD}).exists()
