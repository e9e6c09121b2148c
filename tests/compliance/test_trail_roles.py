"""The change trail records the role behind every change (issue 15 item 7) and is read by
audit area; evidence packs are listed and requested by audit area."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime

import pytest
from django.contrib.auth.models import User

from apps.api.services import admin_token_issue
from apps.compliance import exports
from apps.compliance.context import changes_by, role_at
from apps.compliance.models import ConfigChange, EvidencePack
from apps.compliance.selectors import (
    changes_visible,
    evidence_pack_may_request,
    evidence_packs_visible,
)
from apps.compliance.services import _who
from apps.identity.models import Membership, Role
from apps.identity.roles import Capability
from apps.identity.scope import scope_for
from apps.keys.models import VirtualKey
from apps.tenancy.models import Organization, Team
from tests.compliance.conftest import admin_url, post_form, trail_of
from tests.factories import key_create, org_create, project_create, team_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree():
    acme, globex = org_create("acme"), org_create("globex")
    search, ads = team_create(acme, "search"), team_create(acme, "ads")
    other = team_create(globex, "other")
    return acme, globex, search, ads, other


def person(name: str, *grants: tuple[str, dict]) -> User:
    user = User.objects.create_user(name, password="pw-trail-123456")
    for role, level in grants:
        Membership.objects.create(user=user, role=role, **level)
    return user


def test_a_persons_role_is_read_at_the_changed_objects_level(tree):
    acme, globex, search, ads, other = tree
    lead = person(
        "lead",
        (Role.TEAM_ADMIN, {"team": search}),
        (Role.FINANCE, {"organization": acme}),
    )
    with changes_by(lead):
        in_search = project_create(search, "web")
        in_ads = project_create(ads, "bidder")
        in_globex = project_create(other, "lab")
    (web,) = trail_of(type(in_search), in_search.pk, "create")
    assert web.actor == "lead" and web.actor_user_id == lead.pk
    assert web.actor_role == "finance of org:acme; team_admin of team:acme/search"
    assert (web.organization_id, web.team_id, web.project_id) == (acme.pk, search.pk, in_search.pk)
    # The same person, a sibling team: only what covers it there.
    assert trail_of(type(in_ads), in_ads.pk, "create")[0].actor_role == "finance of org:acme"
    # Another organisation: no role of theirs covers it, and the trail says so (empty).
    assert trail_of(type(in_globex), in_globex.pk, "create")[0].actor_role == ""


def test_tools_tokens_and_the_break_glass_account_name_their_role(tree, admin_client, admin_user):
    acme, _, search, _, _ = tree
    with changes_by("odock_apply"):
        team = team_create(acme, "from-apply")
    assert trail_of(Team, team.pk, "create")[0].actor_role == "odock_apply"
    with changes_by("scim token okta", role="scim token okta (acme)"):
        scim_team = team_create(acme, "from-scim")
    change = trail_of(Team, scim_team.pk, "create")[0]
    assert (change.actor, change.actor_role) == ("scim token okta", "scim token okta (acme)")
    member = person("dev", (Role.MEMBER, {"team": search}))
    with changes_by(member, role="portal"):
        key = key_create(project_create(search), "mine").key
    assert trail_of(VirtualKey, key.pk, "create")[0].actor_role == "portal"

    # The break-glass superuser through the admin (a real request).
    post_form(admin_client, admin_url(Organization, "change", acme.pk), {"display_name": "ACME"})
    (edit,) = trail_of(Organization, acme.pk, "update")
    assert (edit.actor, edit.actor_role) == (admin_user.username, "platform_admin (superuser)")

    # A token: its role at its level.
    issued = admin_token_issue(name="ci", organization=acme, role=Role.TEAM_ADMIN, team=search)
    response = admin_client.post(  # the API, not the admin; the token wins over the session
        "/api/v1/keys",
        {"project_id": project_create(search, "api").pk, "name": "by-token"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {issued.secret}"},
    )
    assert response.status_code == 201, response.content
    made = trail_of(VirtualKey, VirtualKey.objects.get(name="by-token").pk, "create")[0]
    assert (made.actor, made.actor_role) == ("api token ci", "team_admin of team:acme/search")


def test_role_at_covers_the_subtree_never_the_parent_or_siblings(tree):
    acme, globex, search, ads, _ = tree
    lead = person("lead", (Role.TEAM_ADMIN, {"team": search}))
    assert role_at(lead.pk, organization_id=acme.pk, team_id=search.pk) == (
        "team_admin of team:acme/search"
    )
    assert role_at(lead.pk, organization_id=acme.pk) == ""  # the parent
    assert role_at(lead.pk, organization_id=acme.pk, team_id=ads.pk) == ""  # a sibling
    assert role_at(lead.pk, organization_id=globex.pk) == ""
    root = person("root", (Role.PLATFORM_ADMIN, {}))
    assert role_at(root.pk, organization_id=None) == "platform_admin"


def test_the_trail_export_carries_the_role(tree, tmp_path):
    acme, _, search, _, _ = tree
    lead = person("lead", (Role.TEAM_ADMIN, {"team": search}))
    with changes_by(lead):
        project_create(search, "web")
    assert "actor_role" in exports.change_columns()
    files = exports.data_files_write(tmp_path, _no_records(), _changes(acme))
    changes_csv = next(f for f in files if f.name.endswith(".csv") and "change" in f.name)
    rows = list(csv.DictReader(changes_csv.path.open(encoding="utf-8")))
    assert {"lead": "team_admin of team:acme/search"}.items() <= {
        r["actor"]: r["actor_role"] for r in rows
    }.items()
    pdf_line = _who(ConfigChange.objects.get(actor="lead"))
    assert pdf_line == "lead (team_admin of team:acme/search)"


def _no_records():
    from apps.audit.models import RequestLog

    return RequestLog.objects.none()


def _changes(org: Organization):
    from apps.compliance.selectors import changes_in_period

    today = datetime.now(UTC).date()
    return changes_in_period(org.pk, today, today)


# --- Who reads the trail and the evidence packs ----------------------------------------------


def test_the_trail_and_evidence_packs_by_audit_area(tree):
    acme, globex, search, ads, _ = tree
    with changes_by("odock_apply"):
        project_create(search, "web")
        project_create(ads, "bidder")
    auditor = person("auditor", (Role.AUDITOR, {"organization": acme}))
    team_auditor = person("team-auditor", (Role.AUDITOR, {"team": search}))
    finance = person("finance", (Role.FINANCE, {"organization": acme}))
    root = person("root", (Role.PLATFORM_ADMIN, {}))

    def area(user):
        return scope_for(user).area(Capability.AUDIT)

    everything = set(ConfigChange.objects.values_list("pk", flat=True))
    acme_rows = set(
        ConfigChange.objects.filter(organization_id=acme.pk).values_list("pk", flat=True)
    )
    search_rows = set(ConfigChange.objects.filter(team_id=search.pk).values_list("pk", flat=True))
    assert set(changes_visible(area(root)).values_list("pk", flat=True)) == everything
    assert set(changes_visible(area(auditor)).values_list("pk", flat=True)) == acme_rows
    assert set(changes_visible(area(team_auditor)).values_list("pk", flat=True)) == search_rows
    assert search_rows and search_rows < acme_rows < everything
    assert not changes_visible(area(finance)).exists()  # finance reads spend, not the trail

    day = date(2026, 1, 1)
    packs = {
        org.name: EvidencePack.objects.create(organization=org, period_start=day, period_end=day)
        for org in (acme, globex)
    }
    assert set(evidence_packs_visible(area(root))) == set(packs.values())
    assert list(evidence_packs_visible(area(auditor))) == [packs["acme"]]
    # A pack is a whole organisation's evidence: a team's auditor sees none.
    assert not evidence_packs_visible(area(team_auditor)).exists()
    assert not evidence_packs_visible(area(finance)).exists()
    assert evidence_pack_may_request(area(auditor), acme.pk)
    assert not evidence_pack_may_request(area(auditor), globex.pk)
    assert not evidence_pack_may_request(area(team_auditor), acme.pk)
    assert evidence_pack_may_request(area(root), globex.pk)
