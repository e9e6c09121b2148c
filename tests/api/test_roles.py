"""The management API by token role, over real HTTP (the production ASGI application
under uvicorn on loopback): what each role CAN read and change, and what it CANNOT see (another
organisation's or a sibling team's rows are absent from lists, 404 by id) or do (403).

acme has teams search and ads; globex has team other. Each team has one project, one key,
a budget and two audit records; acme has an organisation budget too.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from apps.api.models import AdminToken
from apps.api.services import admin_token_issue
from apps.audit.models import RequestLog
from apps.compliance.models import ConfigChange
from apps.identity.models import Role
from apps.keys.models import VirtualKey
from apps.policies.models import Budget
from apps.tenancy.models import Organization, Project, Team
from tests.conftest import ServerThread
from tests.factories import key_create, org_create, project_create, request_log_create, team_create

API = "/api/v1"


@dataclass
class World:
    url: str
    acme: Organization
    globex: Organization
    search: Team
    ads: Team
    other: Team
    projects: dict[str, Project]
    keys: dict[str, VirtualKey]
    records: dict[str, list[RequestLog]]
    budgets: dict[str, Budget]
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[token]}"}
        return httpx.request(
            method, f"{self.url}{API}{path}", headers=headers, timeout=10, **kwargs
        )

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return self.call("GET", path, token, params=params)


def _token(name: str, org: Organization | None, role: str | None, team: Team | None = None) -> str:
    return admin_token_issue(name=name, organization=org, role=role, team=team).secret


@pytest.fixture
def world(transactional_db, monkeypatch) -> Iterator[World]:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application
    from django.db import connections

    from odock.asgi_router import build_application
    from odock.gateway import build_gateway

    # Each ASGI request's sync code runs in a fresh thread: no connection may outlive it.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    acme, globex = org_create("acme"), org_create("globex")
    search, ads, other = (
        team_create(acme, "search"),
        team_create(acme, "ads"),
        team_create(globex, "other"),
    )
    projects = {t.name: project_create(t, f"{t.name}-app") for t in (search, ads, other)}
    keys = {name: key_create(p, f"{name}-key").key for name, p in projects.items()}
    records = {
        name: [request_log_create(k, "0.25"), request_log_create(k, "0.5")]
        for name, k in keys.items()
    }
    budgets = {
        "acme": Budget.objects.create(organization=acme, limit_usd=Decimal("100")),
        **{
            t.name: Budget.objects.create(team=t, limit_usd=Decimal("10"))
            for t in (search, ads, other)
        },
    }
    w = World("", acme, globex, search, ads, other, projects, keys, records, budgets)
    w.tokens = {
        "platform": _token("platform", None, None),
        "org_admin": _token("acme-admin", acme, None),  # the default role
        "team_admin": _token("search-admin", acme, Role.TEAM_ADMIN, search),
        "finance": _token("acme-finance", acme, Role.FINANCE),
        "team_finance": _token("search-finance", acme, Role.FINANCE, search),
        "auditor": _token("acme-auditor", acme, Role.AUDITOR),
        "team_auditor": _token("search-auditor", acme, Role.AUDITOR, search),
        "globex_admin": _token("globex-admin", globex, Role.ORG_ADMIN),
    }
    app = build_application(build_gateway(), ASGIStaticFilesHandler(get_asgi_application()))
    server = ServerThread(app).start()
    w.url = server.url
    yield w
    server.stop()


def key_names(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {k["name"] for k in response.json()["items"]}


def request_ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {r["request_id"] for r in response.json()["items"]}


def ids_of(world: World, *teams: str) -> set[str]:
    return {r.request_id for t in teams for r in world.records[t]}


# --- Keys: read with configure, change with manage ------------------------------------------


@pytest.mark.parametrize(
    ("token", "visible"),
    [
        ("platform", {"search-key", "ads-key", "other-key"}),
        ("org_admin", {"search-key", "ads-key"}),
        ("team_admin", {"search-key"}),
        ("finance", {"search-key", "ads-key"}),
        ("team_finance", {"search-key"}),
        ("auditor", {"search-key", "ads-key"}),
        ("team_auditor", {"search-key"}),
        ("globex_admin", {"other-key"}),
    ],
)
def test_each_role_lists_the_keys_of_its_area_only(world, token, visible):
    assert key_names(world.get("/keys", token)) == visible
    orgs = world.get("/orgs", token).json()
    teams = {t["name"] for o in orgs for t in o["teams"]}
    assert teams == {world.keys[k.removesuffix("-key")].project.team.name for k in visible}


def test_a_team_admin_token_manages_keys_in_its_team_only(world):
    ads_key, search_key = world.keys["ads"], world.keys["search"]
    # Its sibling team's key is not there at all: 404 by id, as a missing one.
    for path in (
        f"/keys/{ads_key.pk}/policy",
        f"/keys/{ads_key.pk}/revoke",
        f"/keys/{ads_key.pk}/rotate",
    ):
        method = "GET" if path.endswith("policy") else "POST"
        assert world.call(method, path, "team_admin").status_code == 404, path
    ads = world.projects["ads"]
    assert (
        world.call(
            "POST", "/keys", "team_admin", json={"project_id": ads.pk, "name": "x"}
        ).status_code
        == 404
    )
    named = {"org": "acme", "team": "ads", "project": ads.name, "name": "x"}
    assert world.call("POST", "/keys", "team_admin", json=named).status_code == 404
    assert not VirtualKey.objects.filter(name="x").exists()
    ads_key.refresh_from_db()
    assert ads_key.revoked_at is None
    # Its own team: create, rotate, revoke.
    created = world.call(
        "POST",
        "/keys",
        "team_admin",
        json={"project_id": world.projects["search"].pk, "name": "new"},
    )
    assert created.status_code == 201 and created.json()["secret"].startswith("sk-odock-")
    assert world.call("POST", f"/keys/{search_key.pk}/revoke", "team_admin").status_code == 200
    search_key.refresh_from_db()
    assert search_key.revoked_at is not None


@pytest.mark.parametrize("token", ["finance", "team_finance", "auditor", "team_auditor"])
def test_read_only_roles_cannot_create_rotate_or_revoke_keys(world, token):
    key = world.keys["search"]
    project = world.projects["search"]
    created = world.call("POST", "/keys", token, json={"project_id": project.pk, "name": "nope"})
    assert created.status_code == 403
    assert "may not change configuration" in created.json()["detail"]
    assert world.call("POST", f"/keys/{key.pk}/revoke", token).status_code == 403
    assert world.call("POST", f"/keys/{key.pk}/rotate", token).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and not key.previous_digest
    assert not VirtualKey.objects.filter(name="nope").exists()
    # Reading the key's policy is configuration: allowed.
    assert world.get(f"/keys/{key.pk}/policy", token).status_code == 200


# --- Spend and the spend report -------------------------------------------------------------


def budget_ids(response: httpx.Response) -> set[int]:
    assert response.status_code == 200, response.text
    return {b["budget_id"] for b in response.json()}


def test_spend_by_role(world):
    b = world.budgets
    acme_all = {b["acme"].pk, b["search"].pk, b["ads"].pk}
    assert budget_ids(world.get("/spend", "finance")) == acme_all
    assert budget_ids(world.get("/spend", "org_admin")) == acme_all
    # A team's token sees its team's budget, never the organisation's (its whole spend).
    assert budget_ids(world.get("/spend", "team_finance")) == {b["search"].pk}
    assert budget_ids(world.get("/spend", "team_admin")) == {b["search"].pk}
    assert world.get("/spend", "team_finance", team="ads").status_code == 404
    assert world.get("/spend", "finance", org="globex").status_code == 403
    assert world.get("/spend", "finance", key=world.keys["other"].pk).status_code == 404
    for token in ("auditor", "team_auditor"):
        response = world.get("/spend", token)
        assert response.status_code == 403
        assert "may not read spend" in response.json()["detail"]


def test_the_spend_report_is_for_organisation_wide_spend_roles(world):
    params = {"start": "2020-01-01", "end": "2020-02-01"}
    for token in ("finance", "org_admin"):
        report = world.get("/reports/spend", token, **params)
        assert report.status_code == 200, report.text
        assert report.json()["organizations"] == ["acme"]
    assert world.get("/reports/spend", "finance", org="globex", **params).status_code == 403
    # Organisation-wide figures would show a team's token its sibling teams' spend.
    for token in ("team_finance", "team_admin", "auditor", "team_auditor"):
        assert world.get("/reports/spend", token, **params).status_code == 403, token
    assert world.get("/reports/spend", "platform", **params).json()["organizations"] is None


# --- Audit records and export ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "teams"),
    [
        ("platform", ("search", "ads", "other")),
        ("org_admin", ("search", "ads")),
        ("auditor", ("search", "ads")),
        ("team_auditor", ("search",)),
        ("team_admin", ("search",)),
    ],
)
def test_audit_records_and_export_by_area(world, token, teams):
    assert request_ids(world.get("/audit/records", token)) == ids_of(world, *teams)
    export = world.get("/audit/export", token, format="jsonl")
    assert export.status_code == 200
    exported = {json.loads(line)["request_id"] for line in export.text.splitlines()}
    assert exported == ids_of(world, *teams)
    hidden = {"search", "ads", "other"} - set(teams)
    for team in hidden:
        request_id = world.records[team][0].request_id
        assert world.get(f"/audit/records/{request_id}", token).status_code == 404
        assert request_id not in export.text


def test_a_team_auditor_naming_a_sibling_team_gets_nothing(world):
    assert request_ids(world.get("/audit/records", "team_auditor", team="ads")) == set()
    assert world.get("/audit/records", "team_auditor", org="globex").status_code == 403
    own = world.get("/audit/records", "team_auditor", org="acme")
    assert request_ids(own) == ids_of(world, "search")


@pytest.mark.parametrize("token", ["finance", "team_finance"])
def test_finance_reads_no_audit_records_and_no_change_trail(world, token):
    for path in ("/audit/records", "/audit/export", "/audit/changes"):
        response = world.get(path, token)
        assert response.status_code == 403, path
        assert "may not read the audit log" in response.json()["detail"]
    request_id = world.records["search"][0].request_id
    assert world.get(f"/audit/records/{request_id}", token).status_code == 403


# --- The change trail -----------------------------------------------------------------------


def test_the_change_trail_by_area_with_the_role_behind_each_change(world):
    # A change by the team admin's token, through the API.
    revoked = world.call("POST", f"/keys/{world.keys['search'].pk}/revoke", "team_admin")
    assert revoked.status_code == 200
    change = ConfigChange.objects.filter(
        object_type="keys.virtualkey", object_id=str(world.keys["search"].pk), action="update"
    ).get()
    assert change.actor == "api token search-admin"
    assert change.actor_role == "team_admin of team:acme/search"
    assert (change.organization_id, change.team_id) == (world.acme.pk, world.search.pk)

    def trail(token: str, **params: Any) -> list[dict]:
        response = world.get("/audit/changes", token, limit=1000, **params)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    every = trail("platform")
    mine = [c for c in trail("team_auditor") if c["id"] == change.pk]
    assert mine and mine[0]["actor_role"] == "team_admin of team:acme/search"
    # The team's auditor: its team's objects only; the organisation's: all of acme's.
    assert {c["team_id"] for c in trail("team_auditor")} == {world.search.pk}
    acme_rows = trail("auditor")
    assert acme_rows and {c["organization_id"] for c in acme_rows} == {world.acme.pk}
    assert {c["organization_id"] for c in trail("globex_admin")} == {world.globex.pk}
    # Platform-wide changes (platform tokens) only for the platform.
    assert any(c["organization_id"] is None for c in every)
    assert not any(c["organization_id"] is None for c in acme_rows)
    assert len(every) > len(acme_rows)
    # Filters and pages.
    keys_only = trail("auditor", object_type="keys.virtualkey")
    assert keys_only and {c["object_type"] for c in keys_only} == {"keys.virtualkey"}
    first = world.get("/audit/changes", "auditor", limit=1).json()
    second = world.get("/audit/changes", "auditor", limit=1, cursor=first["next_cursor"]).json()
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [c["id"] for c in acme_rows[:2]]


# --- Tokens: roles fit their level; the command ---------------------------------------------


def test_a_token_role_must_fit_its_level(db):
    acme, globex = org_create("acme"), org_create("globex")
    search, other = team_create(acme, "search"), team_create(globex, "other")
    refused = [
        {"organization": None, "role": Role.FINANCE},
        {"organization": acme, "role": Role.PLATFORM_ADMIN},
        {"organization": acme, "role": Role.TEAM_ADMIN},  # which team?
        {"organization": acme, "role": Role.ORG_ADMIN, "team": search},
        {"organization": acme, "role": Role.FINANCE, "team": other},  # another org's team
        {"organization": acme, "role": Role.MEMBER},
    ]
    for kwargs in refused:
        with pytest.raises(ValidationError):
            admin_token_issue(name="t", **kwargs)
    assert not AdminToken.objects.exists()
    assert admin_token_issue(name="p").token.role == Role.PLATFORM_ADMIN
    assert admin_token_issue(name="o", organization=acme).token.role == Role.ORG_ADMIN


def test_the_command_issues_a_token_with_a_role_and_a_team(db):
    acme = org_create("acme")
    search = team_create(acme, "search")
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "odock_admin_token",
        "ci",
        "--org",
        "acme",
        "--role",
        "team_admin",
        "--team",
        "search",
        stdout=out,
        stderr=err,
    )
    token = AdminToken.objects.get(name="ci")
    assert (token.role, token.team) == (Role.TEAM_ADMIN, search)
    assert "team_admin of team:acme/search" in err.getvalue()
    assert out.getvalue().strip().startswith("odk-admin-")
    with pytest.raises(CommandError, match="no team named"):
        call_command(
            "odock_admin_token", "x", "--org", "acme", "--role", "finance", "--team", "ads"
        )
    with pytest.raises(CommandError, match="need --org"):
        call_command("odock_admin_token", "x", "--role", "finance")
    with pytest.raises(CommandError, match="names its team"):
        call_command("odock_admin_token", "x", "--org", "acme", "--role", "team_admin")
    with pytest.raises(CommandError):
        call_command("odock_admin_token", "x", "--org", "acme", "--role", "member")
    assert AdminToken.objects.count() == 1


# --- Evidence packs -------------------------------------------------------------------------


def test_evidence_packs_by_role(world, settings, tmp_path):
    from apps.compliance.models import EvidencePack
    from apps.compliance.services import evidence_pack_build

    settings.MEDIA_ROOT = tmp_path / "media"
    period = {"period_start": "2026-01-01", "period_end": "2026-01-31"}
    made = world.call("POST", "/evidence/packs", "auditor", json=period)
    assert made.status_code == 201, made.text
    pack = made.json()
    assert pack["organization"] == "acme"
    assert pack["status"] in ("queued", "done")  # done already where tasks run in-process
    # Another organisation, a team's token, a finance token: refused, nothing created.
    assert (
        world.call(
            "POST", "/evidence/packs", "auditor", json={**period, "org": "globex"}
        ).status_code
        == 403
    )
    for token in ("team_auditor", "team_admin", "finance"):
        assert world.call("POST", "/evidence/packs", token, json=period).status_code == 403, token
        assert world.get("/evidence/packs", token).status_code == 403, token
    reversed_period = {"period_start": "2026-02-01", "period_end": "2026-01-01"}
    assert world.call("POST", "/evidence/packs", "auditor", json=reversed_period).status_code == 422
    globex = world.call("POST", "/evidence/packs", "platform", json={**period, "org": "globex"})
    assert globex.status_code == 201
    assert EvidencePack.objects.count() == 2

    assert [p["id"] for p in world.get("/evidence/packs", "auditor").json()] == [pack["id"]]

    assert [p["id"] for p in world.get("/evidence/packs", "globex_admin").json()] == [
        globex.json()["id"]
    ]
    assert len(world.get("/evidence/packs", "platform").json()) == 2
    assert world.get(f"/evidence/packs/{globex.json()['id']}", "auditor").status_code == 404
    queued = EvidencePack.objects.create(
        organization=world.acme, period_start=date(2026, 2, 1), period_end=date(2026, 2, 1)
    )
    assert (
        world.get(f"/evidence/packs/{queued.pk}/files/evidence.pdf", "auditor").status_code == 404
    )

    if pack["status"] != "done":
        evidence_pack_build(pack_id=pack["id"])  # what the worker does
    done = world.get(f"/evidence/packs/{pack['id']}", "auditor").json()
    assert done["status"] == "done"
    names = {f["name"]: f["sha256"] for f in done["files"]}
    assert {"evidence.pdf", "changes.csv", "records.csv"} <= set(names)
    changes = world.get(f"/evidence/packs/{pack['id']}/files/changes.csv", "auditor")
    assert changes.status_code == 200
    assert hashlib.sha256(changes.content).hexdigest() == names["changes.csv"]
    assert "actor_role" in changes.text.splitlines()[0]
    assert (
        world.get(f"/evidence/packs/{pack['id']}/files/changes.csv", "globex_admin").status_code
        == 404
    )
    assert world.get(f"/evidence/packs/{pack['id']}/files/nope.csv", "auditor").status_code == 404


# --- The admin's spend report forms take the same rule (organisation-wide reports) ----------


def test_spend_report_forms_offer_only_the_areas_whole_organisations(db):
    from apps.identity.scope import Area
    from apps.reports.forms import ReportScheduleForm, SpendReportForm

    acme, globex = org_create("acme"), org_create("globex")
    finance = Area(org_ids=frozenset({acme.pk}))
    form = SpendReportForm(area=finance)
    assert list(form.fields["organization"].queryset) == [acme]
    assert form.fields["organization"].required  # no "all organisations" below the platform
    data = {"start": "2026-01-01", "end": "2026-02-01", "granularity": "day", "format": "html"}
    refused = SpendReportForm({**data, "organization": globex.pk}, area=finance)
    assert not refused.is_valid() and "organization" in refused.errors
    assert not SpendReportForm(data, area=finance).is_valid()  # must pick one
    chosen = SpendReportForm({**data, "organization": acme.pk}, area=finance)
    assert chosen.is_valid(), chosen.errors
    assert chosen.spec.organization_ids == (acme.pk,)
    # A team's area holds no whole organisation: nothing to choose.
    team_area = Area(team_ids=frozenset({team_create(acme, "search").pk}))
    assert not SpendReportForm(area=team_area).fields["organization"].queryset.exists()
    schedule = ReportScheduleForm(area=finance)
    assert list(schedule.fields["organization"].queryset) == [acme]
    # The platform (and callers not passing an area yet): every organisation.
    platform = SpendReportForm(area=Area(everything=True))
    assert set(platform.fields["organization"].queryset) == {acme, globex}
    assert SpendReportForm({**data}, area=Area(everything=True)).is_valid()
