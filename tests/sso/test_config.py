"""The ``sso:`` block for ``odock_apply`` (apps/sso/config.py): declarative, idempotent,
all or nothing, secrets never reported."""

from __future__ import annotations

import pytest
import yaml
from django.core.management.base import CommandError
from pydantic import ValidationError

from apps.sso.config import SsoConfigError, SsoSpec, sso_apply
from apps.sso.models import GroupMapping, OidcProvider
from tests.factories import odock_apply_text, org_create, project_create, team_create

pytestmark = pytest.mark.django_db

BLOCK = """
issuer: https://login.acme.example
client_id: odock
client_secret_env: ACME_OIDC_SECRET
allowed_email_domains: [acme.example, ACME.test]
mappings:
  - {group: search-admins, role: team_admin, team: search}
  - {group: acme-finance, role: finance}
  - {group: web-devs, role: member, project: search/web}
"""


def spec(text: str) -> SsoSpec:
    return SsoSpec.model_validate(yaml.safe_load(text))


@pytest.fixture
def acme(monkeypatch):
    monkeypatch.setenv("ACME_OIDC_SECRET", "s3cret-from-env")
    org = org_create("acme")
    project_create(team_create(org, "search"), "web")
    team_create(org_create("globex"), "ops")
    return org


def rows(org) -> set[tuple]:
    return set(
        GroupMapping.objects.filter(provider__organization=org).values_list(
            "group", "role", "team__name", "project__name"
        )
    )


def test_creates_then_a_second_run_changes_nothing(acme):
    assert sso_apply(organization=acme, spec=spec(BLOCK)) == ["created"]
    provider = OidcProvider.objects.get(organization=acme)
    assert provider.client_secret == "s3cret-from-env"
    assert provider.email_domains == ["acme.example", "acme.test"]
    assert rows(acme) == {
        ("search-admins", "team_admin", "search", None),
        ("acme-finance", "finance", None, None),
        ("web-devs", "member", None, "web"),
    }
    assert sso_apply(organization=acme, spec=spec(BLOCK)) == []


def test_mappings_are_replaced_and_left_out_fields_kept(acme):
    sso_apply(organization=acme, spec=spec(BLOCK))
    changed = sso_apply(
        organization=acme,
        spec=spec("client_secret: new-secret-value\nmappings: [{group: admins, role: org_admin}]"),
    )
    assert changed == ["client_secret", "mappings"]  # the name, never the value
    provider = OidcProvider.objects.get(organization=acme)
    assert provider.client_secret == "new-secret-value"
    assert provider.issuer == "https://login.acme.example"
    assert rows(acme) == {("admins", "org_admin", None, None)}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "mappings: [{group: g, role: team_admin, team: ops}]",
            "sso.mappings[0].team: no team ops in acme",
        ),
        (
            "mappings: [{group: g, role: team_admin}]",
            "sso.mappings[0]: A team_admin role is granted at the team level.",
        ),
        (
            "mappings: [{group: g, role: member, project: search/nope}]",
            "sso.mappings[0].project: no project search/nope",
        ),
        (
            "client_secret_env: NOT_SET_ANYWHERE",
            "sso.client_secret_env: NOT_SET_ANYWHERE is not set",
        ),
        ("issuer: not a url", "sso.issuer: Enter a valid URL."),
    ],
)
def test_a_bad_block_names_the_field_and_changes_nothing(acme, text, error):
    sso_apply(organization=acme, spec=spec(BLOCK))
    before = rows(acme), OidcProvider.objects.values().get()
    with pytest.raises(SsoConfigError) as refused:
        sso_apply(organization=acme, spec=spec(text))
    assert any(e.startswith(error) for e in refused.value.errors), refused.value.errors
    assert (rows(acme), OidcProvider.objects.values().get()) == before


def test_a_new_provider_needs_its_issuer_and_client_id(acme):
    with pytest.raises(SsoConfigError) as refused:
        sso_apply(organization=acme, spec=spec("client_id: odock"))
    assert refused.value.errors == ["sso.issuer: required for a new provider"]
    assert not OidcProvider.objects.exists()


@pytest.mark.parametrize(
    "text",
    [
        "mappings: [{group: g, role: platform_admin}]",  # never granted by SSO
        "mappings: [{group: g, role: member, team: a, project: a/b}]",
        "client_secret: a\nclient_secret_env: B",
        "issuer: https://x\nclent_id: misspelt",
    ],
)
def test_the_shape_is_checked_before_anything(text):
    with pytest.raises(ValidationError):
        spec(text)


def test_odock_apply_takes_an_organisations_sso_block(tmp_path, monkeypatch):
    """Through the config file: created, then unchanged on re-apply; the secret is never
    printed; a mapping naming a team the organisation lacks fails the whole apply."""
    monkeypatch.setenv("ACME_OIDC_SECRET", "s3cret-from-env")
    indented = "\n".join("      " + line for line in BLOCK.strip().splitlines())
    text = f"""
organizations:
  - name: acme
    teams:
      - name: search
        projects: [{{name: web}}]
    sso:
{indented}
"""
    out = odock_apply_text(tmp_path, text)
    assert "single sign-on of acme" in out and "s3cret-from-env" not in out
    provider = OidcProvider.objects.get(organization__name="acme")
    assert provider.client_secret == "s3cret-from-env"
    assert ("search-admins", "team_admin", "search", None) in rows(provider.organization)
    again = odock_apply_text(tmp_path, text)
    assert "single sign-on of acme" not in again
    broken = text.replace("team: search}", "team: nowhere}")
    with pytest.raises(CommandError, match="nowhere"):
        odock_apply_text(tmp_path, broken)
    assert ("search-admins", "team_admin", "search", None) in rows(provider.organization)
