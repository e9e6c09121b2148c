"""A live site (the production ASGI stack under uvicorn on loopback: gateway and Django),
people with memberships, and an httpx client that signs in to the portal with CSRF."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth import get_user_model

from apps.identity.models import Membership, Role
from apps.policies.models import Budget, ModelAccess
from apps.providers.models import Model
from apps.tenancy.models import Organization, Project, Team
from tests.conftest import ServerThread
from tests.factories import org_create, project_create, team_create

PASSWORD = "pw-portal-123456"


@pytest.fixture
def live_site(transactional_db, monkeypatch, settings, tmp_path) -> Iterator[ServerThread]:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application
    from django.db import connections

    # Each ASGI request's sync code runs in a fresh thread: no persistent connections,
    # or they would outlive the test and block the test database's teardown.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    settings.ODOCK_AUDIT_SPOOL_DIR = tmp_path / "audit-spool"
    settings.ODOCK_SNAPSHOT_FILE = tmp_path / "policy-snapshot"

    from odock.asgi_router import build_application
    from odock.gateway import build_gateway

    gateway = build_gateway(redis_url="")
    server = ServerThread(
        build_application(gateway, ASGIStaticFilesHandler(get_asgi_application()))
    ).start()
    server.gateway = gateway  # type: ignore[attr-defined]
    yield server
    server.stop()


def person(name: str, *grants: tuple[str, dict]):
    user = get_user_model().objects.create_user(name, password=PASSWORD)
    for role, level in grants:
        Membership.objects.create(user=user, role=role, **level)
    return user


@dataclass
class World:
    acme: Organization
    search: Team
    web: Project
    billing: Team
    invoices: Project
    mini: Model
    big: Model
    people: dict = field(default_factory=dict)


@pytest.fixture
def world(transactional_db) -> World:
    acme = org_create("acme")
    search, billing = team_create(acme, "search"), team_create(acme, "billing")
    web, invoices = project_create(search, "web"), project_create(billing, "invoices")
    mini = Model.objects.create(name="gpt-4o-mini", input_per_mtok=1, output_per_mtok=1)
    big = Model.objects.create(name="gpt-4o", input_per_mtok=5, output_per_mtok=15)
    # The search team: 100 USD a month, 600 rpm, only the small model.
    Budget.objects.create(team=search, limit_usd=Decimal("100"), period="monthly")
    ModelAccess.objects.create(team=search, model=mini)
    w = World(acme, search, web, billing, invoices, mini, big)
    w.people = {
        "ann": person("ann", (Role.MEMBER, {"team": search})),
        "bob": person("bob", (Role.MEMBER, {"team": search})),
        "nobody": person("nobody"),
    }
    return w


class Browser:
    """httpx with the portal's session and CSRF cookie, as a browser would send them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=15, follow_redirects=False)

    def csrf(self) -> str:
        token = self.client.cookies.get("csrftoken")
        if token is None:
            self.client.get("/portal/login/")
            token = self.client.cookies["csrftoken"]
        return token

    def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        page = self.client.get("/portal/login/")
        assert page.status_code == 200
        return self.client.post(
            "/portal/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": self.csrf()},
            headers={"Referer": self.url + "/portal/login/"},
        )

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True) -> httpx.Response:
        data = dict(data or {})
        if csrf:
            data["csrfmiddlewaretoken"] = self.csrf()
        return self.client.post(path, data=data, headers={"Referer": self.url + path})

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def browser_for(live_site):
    opened: list[Browser] = []

    def open_as(username: str | None) -> Browser:
        b = Browser(live_site.url)
        opened.append(b)
        if username is not None:
            assert b.login(username).status_code == 302
        return b

    yield open_as
    for b in opened:
        b.close()


def secret_in(html: str) -> str:
    match = re.search(r'id="secret">(sk-odock-[^<]+)<', html)
    assert match, "no secret on the page"
    return match.group(1)
