"""SCIM in the admin: a token's secret is shown once and kept nowhere; an organisation's
admin sees and changes only its own tokens, settings, groups and identities; mapping a
group there grants its members the role."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from apps.identity.models import Membership, MembershipSource, Role
from apps.scim.models import ScimGroup, ScimIdentity, ScimSettings, ScimToken
from apps.scim.tokens import scim_token_authenticate
from tests.factories import team_create
from tests.scim.conftest import ScimClient

pytestmark = pytest.mark.django_db

User = get_user_model()
MODELS = ("scimtoken", "scimgroup", "scimsettings", "scimidentity")


def _staff(username: str, **membership) -> Client:
    """An account (not staff, no Django permissions): what it sees is decided by its
    membership alone."""
    user = User.objects.create_user(username, password="pw-" + username)
    if membership:
        Membership.objects.create(user=user, **membership)
    client = Client()
    client.force_login(user)
    return client


def _changelist(client: Client, model: str) -> str:
    response = client.get(reverse(f"admin:scim_{model}_changelist"))
    assert response.status_code == 200
    return response.content.decode()


def test_a_token_secret_is_shown_once_and_kept_nowhere(admin_client, acme):
    response = admin_client.post(
        reverse("admin:scim_scimtoken_add"),
        {"name": "okta", "organization": acme.org.pk, "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "scim/scimtoken_created.html"
    assert "no-store" in response["Cache-Control"]
    secret = response.context["secret"]
    assert secret.startswith("odk-scim-") and secret in response.content.decode()
    token = ScimToken.objects.get(name="okta")
    assert scim_token_authenticate(secret=secret) == token
    assert ScimClient(secret).get("Users").status_code == 200

    for url in (
        reverse("admin:scim_scimtoken_changelist"),
        reverse("admin:scim_scimtoken_change", args=[token.pk]),
        reverse("admin:scim_scimtoken_history", args=[token.pk]),
    ):
        page = admin_client.get(url).content.decode()
        assert secret not in page and token.digest not in page
    # Not in the session or the messages either.
    assert secret not in str(dict(admin_client.session))

    admin_client.post(
        reverse("admin:scim_scimtoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )
    assert ScimClient(secret).get("Users").status_code == 401


def test_an_org_admin_sees_and_changes_only_its_organisation(acme, globex):
    for tenant in (acme, globex):
        ada = tenant.scim.create_user(f"ada-{tenant.org.name}")
        tenant.scim.create_group(f"eng-{tenant.org.name}", [ada["id"]])
        ScimSettings.objects.create(organization=tenant.org)
    client = _staff("alice", role=Role.ORG_ADMIN, organization=acme.org)

    for model in MODELS:
        page = _changelist(client, model)
        assert "acme" in page and "globex" not in page, model

    # Another organisation's rows are not there to open or change.
    theirs = ScimGroup.objects.get(organization=globex.org)
    url = reverse("admin:scim_scimgroup_change", args=[theirs.pk])
    assert client.get(url).status_code == 302  # "does not exist" (not a 403: no leak)
    client.post(url, {"role": Role.MEMBER, "team": "", "project": ""})
    assert ScimGroup.objects.get(pk=theirs.pk).role == ""
    # Nor can a token be issued for it (the choice is refused by the form).
    response = client.post(
        reverse("admin:scim_scimtoken_add"),
        {"name": "sneaky", "organization": globex.org.pk, "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert not ScimToken.objects.filter(name="sneaky").exists()
    # Their own: a token is issued and shown once.
    response = client.post(
        reverse("admin:scim_scimtoken_add"),
        {"name": "entra", "organization": acme.org.pk, "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.context["secret"].startswith("odk-scim-")


def test_a_team_admin_or_a_finance_user_sees_no_scim_configuration(acme):
    acme.scim.create_user("ada")
    acme.scim.create_group("eng")
    team = team_create(acme.org)
    for client in (
        _staff("tom", role=Role.TEAM_ADMIN, team=team),
        _staff("fiona", role=Role.FINANCE, organization=acme.org),
    ):
        for model in MODELS:  # a team's grant never reaches an organisation's set-up
            response = client.get(reverse(f"admin:scim_{model}_changelist"))
            assert response.status_code == 403, model
            assert "acme" not in response.content.decode()


def test_mapping_a_group_in_the_admin_grants_its_members_the_role(acme, globex):
    search = team_create(acme.org, "search")
    ada = acme.scim.create_user("ada")
    group = acme.scim.create_group("search-admins", [ada["id"]])
    row = ScimGroup.objects.get(scim_id=group["id"])
    client = _staff("alice", role=Role.ORG_ADMIN, organization=acme.org)
    url = reverse("admin:scim_scimgroup_change", args=[row.pk])

    # A team of another organisation is not a valid choice.
    response = client.post(
        url, {"role": Role.TEAM_ADMIN, "team": team_create(globex.org).pk, "project": ""}
    )
    assert response.status_code == 200 and response.context["adminform"].form.errors
    # A team admin must be granted at a team: the model's rule is shown as a form error.
    response = client.post(url, {"role": Role.TEAM_ADMIN, "team": "", "project": ""})
    assert response.status_code == 200 and "team level" in response.content.decode()
    assert not Membership.objects.filter(source=MembershipSource.SCIM).exists()

    response = client.post(url, {"role": Role.TEAM_ADMIN, "team": search.pk, "project": ""})
    assert response.status_code == 302
    user = ScimIdentity.objects.get(scim_id=ada["id"]).user
    assert list(
        Membership.objects.filter(user=user).values_list("role", "team__name", "source")
    ) == [("team_admin", "search", "scim")]
