"""The admin over real HTTP, one person per role: Django's ASGI application under uvicorn on
loopback, a person logging in through the admin's own login form (CSRF and all) with
httpx, and two organisations whose rows must never mix.

Every database write happens before a request is sent, in the test's thread; the server
answers from its own threads against the same (transactional) test database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.identity.models import Membership, Role
from apps.keys.models import VirtualKey
from apps.policies.models import Budget, RateLimit
from apps.providers.models import Model
from apps.reports.models import UsageRollup
from apps.tenancy.models import Organization, Project, Team
from tests.conftest import ServerThread
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    team_create,
)

PASSWORD = "pw-Admin-scope-4821"
TIMEOUT = httpx.Timeout(20.0)
#: A model choice field's refusal: the value is not among the choices offered to the person.
NOT_A_CHOICE = "That choice is not one of the available choices"


class FormParser(HTMLParser):
    """The named fields of a page's forms, as a browser would submit them unchanged
    (checked boxes only, each select's selected options), plus every select's choices."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[tuple[str, str]] = []
        self.choices: dict[str, list[tuple[str, str]]] = {}
        self._select: str | None = None
        self._option: str | None = None
        self._option_text = ""
        self._selected = False
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind in ("submit", "button", "image", "file"):
                return
            self.values.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select" and a.get("name"):
            self._select = a["name"]
            self.choices[self._select] = []
        elif tag == "option" and self._select is not None:
            self._option = a.get("value", "")
            self._selected = "selected" in a
            self._option_text = ""
        elif tag == "textarea" and a.get("name"):
            self._textarea, self._text = a["name"], ""

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option_text += data
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "option" and self._select is not None and self._option is not None:
            self.choices[self._select].append((self._option, self._option_text.strip()))
            if self._selected:
                self.values.append((self._select, self._option))
            self._option = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.values.append((self._textarea, self._text.lstrip("\n")))
            self._textarea = None


def parse_form(html: str) -> FormParser:
    parser = FormParser()
    parser.feed(html)
    return parser


class AdminBrowser:
    """One person's session with the admin: cookies, CSRF, forms as a browser sends them."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=TIMEOUT, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        page = self.http.get("/admin/login/", params={"next": "/admin/"})
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None, page.text[:500]
        return self.http.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": username,
                "password": password,
                "next": "/admin/",
            },
        )

    def get(self, url: str, **params: Any) -> httpx.Response:
        return self.http.get(url, params=params or None)

    def form(self, url: str) -> FormParser:
        response = self.http.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return parse_form(response.text)

    def post(self, url: str, data: list[tuple[str, str]] | dict[str, Any]) -> httpx.Response:
        items = list(data.items()) if isinstance(data, dict) else list(data)
        items = [(k, v) for k, v in items if k != "csrfmiddlewaretoken"]
        token = self.http.cookies.get("csrftoken")
        body = urlencode([("csrfmiddlewaretoken", token), *items])  # repeated names kept
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.http.post(url, content=body, headers=headers)

    def autocomplete(self, app_label: str, model_name: str, field: str, term: str = "") -> set:
        """The choices the admin's autocomplete offers for a field: a set of labels."""
        response = self.http.get(
            "/admin/autocomplete/",
            params={
                "app_label": app_label,
                "model_name": model_name,
                "field_name": field,
                "term": term,
            },
        )
        assert response.status_code == 200, (field, response.status_code)
        return {item["text"] for item in response.json()["results"]}

    def submit(self, url: str, changes: dict[str, Any], *, button: str = "_save") -> httpx.Response:
        """GET a form page, change some fields, POST it as a browser would."""
        values = [(k, v) for k, v in self.form(url).values if k not in changes]
        for name, value in changes.items():
            for item in value if isinstance(value, list) else [value]:
                values.append((name, str(item)))
        values.append((button, "Save"))
        return self.post(url, values)


@dataclass
class World:
    acme: Organization
    globex: Organization
    search: Team  # acme/search
    ads: Team  # acme/ads
    lab: Team  # globex/lab
    assistant: Project  # acme/search/assistant
    banner: Project  # acme/ads/banner
    notebook: Project  # globex/lab/notebook
    search_key: VirtualKey
    ads_key: VirtualKey
    globex_key: VirtualKey
    model: Model
    acme_budget: Budget  # at the organisation level
    search_budget: Budget  # at acme/search
    ads_limit: RateLimit  # at acme/ads/banner
    globex_budget: Budget
    logs: dict[str, RequestLog]
    users: dict[str, User]


def _log(name: str, key: VirtualKey) -> RequestLog:
    project = key.project
    return RequestLog.objects.create(
        request_id=f"req-{name}",
        created_at=timezone.now() - timedelta(minutes=5),
        organization_id=project.team.organization_id,
        team_id=project.team_id,
        project_id=project.pk,
        key=key,
        key_prefix=key.prefix,
        endpoint="chat.completions",
        model_requested="gpt-4o-mini",
        status_code=200,
        cost_usd=Decimal("0.25"),
    )


def _person(username: str, role: str | None, **level: Any) -> User:
    user = User.objects.create_user(username, password=PASSWORD)
    if role is not None:
        Membership.objects.create(user=user, role=role, **level)
    return user


@pytest.fixture
def world(transactional_db, settings) -> World:
    # Eight people log in per test: a fast hasher (the server thread reads these settings).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    acme, globex = org_create("acme"), org_create("globex")
    search, ads, lab = (
        team_create(acme, "search"),
        team_create(acme, "ads"),
        team_create(globex, "lab"),
    )
    assistant = project_create(search, "assistant")
    banner = project_create(ads, "banner")
    notebook = project_create(lab, "notebook")
    keys = {
        "search": key_create(assistant, "search-prod").key,
        "ads": key_create(banner, "ads-prod").key,
        "globex": key_create(notebook, "globex-prod").key,
    }
    model = model_create("gpt-4o-mini", provider_create("http://127.0.0.1:9/v1", name="openai"))
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for key in keys.values():
        UsageRollup.objects.create(
            hour=hour,
            organization_id=key.project.team.organization_id,
            team_id=key.project.team_id,
            project_id=key.project_id,
            key_id=key.pk,
            model_requested=f"model-of-{key.name}",
            requests=1,
            cost_usd=Decimal("1.5"),
            computed_at=hour,
        )
    users = {
        "platform": _person("platform", Role.PLATFORM_ADMIN),
        "org_admin": _person("org-admin", Role.ORG_ADMIN, organization=acme),
        "team_admin": _person("team-admin", Role.TEAM_ADMIN, team=search),
        "finance": _person("finance", Role.FINANCE, organization=acme),
        "auditor": _person("auditor", Role.AUDITOR, organization=acme),
        "member": _person("member", Role.MEMBER, team=search),
        "nobody": _person("nobody", None),
        "globex_admin": _person("globex-admin", Role.ORG_ADMIN, organization=globex),
    }
    User.objects.filter(username="nobody").update(is_staff=True)  # staff alone: no admin
    return World(
        acme=acme,
        globex=globex,
        search=search,
        ads=ads,
        lab=lab,
        assistant=assistant,
        banner=banner,
        notebook=notebook,
        search_key=keys["search"],
        ads_key=keys["ads"],
        globex_key=keys["globex"],
        model=model,
        acme_budget=Budget.objects.create(organization=acme, limit_usd=Decimal("500")),
        search_budget=Budget.objects.create(team=search, limit_usd=Decimal("100")),
        ads_limit=RateLimit.objects.create(project=banner, rpm=60),
        globex_budget=Budget.objects.create(organization=globex, limit_usd=Decimal("900")),
        logs={name: _log(name, key) for name, key in keys.items()},
        users=users,
    )


@pytest.fixture
def live_admin(world, monkeypatch) -> Iterator[str]:
    """Django's ASGI application (the admin) on loopback."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application
    from django.db import connections

    # Each ASGI request runs its sync code in a fresh thread; without this, every thread
    # would keep a connection open past the test and block the database teardown.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    django_app = ASGIStaticFilesHandler(get_asgi_application())  # the admin's CSS, too

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # uvicorn runs with lifespan on; Django has none
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await django_app(scope, receive, send)

    server = ServerThread(app).start()
    yield server.url
    server.stop()


@pytest.fixture
def browser_for(live_admin) -> Iterator[Any]:
    """``browser_for("org_admin")``: a logged-in admin session of that person."""
    opened: list[AdminBrowser] = []

    def open_as(person: str) -> AdminBrowser:
        browser = AdminBrowser(live_admin)
        opened.append(browser)
        response = browser.login(person.replace("_", "-"))
        assert response.status_code == 302 and response.headers["location"] == "/admin/", (
            person,
            response.status_code,
        )
        return browser

    yield open_as
    for browser in opened:
        browser.close()


def form_errors(html: str) -> list[str]:
    """The error messages a form page shows (for assertion messages)."""
    return [
        re.sub(r"<[^>]+>", " ", m).strip()
        for m in re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', html, re.S)
    ]


def url(name: str, *args: Any) -> str:
    from django.urls import reverse

    return reverse(f"admin:{name}", args=args)
