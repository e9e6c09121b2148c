"""The dashboard by role, over real HTTP and real websockets against the production ASGI
stack on loopback: what each role sees (its spend area's figures, organisations, budgets
and live requests) and what it cannot (another organisation's or a sibling team's rows,
a 403 for a person without a spend role).

Seeded (tests/dashboard/conftest.py), last 24 h: acme/search 1.75 (keys assistant-prod,
assistant-dev), acme/ads 3.00 (ads-bidder), globex/other 10.00 (globex-bot).
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
from django.conf import settings
from django.test import Client
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from apps.audit.models import RequestLog
from apps.dashboard.websocket import LIVE_PATH
from apps.identity.models import Role
from apps.policies.models import Budget
from tests.dashboard.conftest import make_user
from tests.factories import key_create, model_create, project_create, provider_create

DATA = "/admin/dashboard/data/{}.json"


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def people(seeded) -> dict[str, Any]:
    """One person per role (and one with none), each signed in."""
    return {
        "platform": make_user("root", staff=True, role=Role.PLATFORM_ADMIN),
        "org_admin": make_user(
            "acme-admin", staff=True, role=Role.ORG_ADMIN, organization=seeded.acme
        ),
        "team_admin": make_user(
            "search-admin", staff=True, role=Role.TEAM_ADMIN, team=seeded.search
        ),
        "finance": make_user(
            "acme-finance", staff=True, role=Role.FINANCE, organization=seeded.acme
        ),
        "team_finance": make_user("ads-finance", staff=True, role=Role.FINANCE, team=seeded.ads),
        "auditor": make_user(
            "acme-auditor", staff=True, role=Role.AUDITOR, organization=seeded.acme
        ),
        "member": make_user("acme-member", staff=False, role=Role.MEMBER, organization=seeded.acme),
        "nobody": make_user("nobody", staff=True),
    }


class Viewer:
    def __init__(self, url: str, user) -> None:
        self.http = httpx.Client(base_url=url, headers={"Cookie": session_cookie(user)}, timeout=10)

    def data(self, chart: str, **params: Any) -> httpx.Response:
        return self.http.get(DATA.format(chart), params=params)

    def ok(self, chart: str, **params: Any) -> dict:
        response = self.data(chart, **params)
        assert response.status_code == 200, response.text
        return response.json()


EXPECTED = {
    # role: (24 h spend, teams in the spend chart, top keys, organisations in the picker)
    "platform": ("14.75", {"acme/search", "acme/ads", "globex/other"}, 4, {"acme", "globex"}),
    "org_admin": ("4.75", {"acme/search", "acme/ads"}, 3, {"acme"}),
    "finance": ("4.75", {"acme/search", "acme/ads"}, 3, {"acme"}),
    "team_admin": ("1.75", {"acme/search"}, 2, {"acme"}),
    "team_finance": ("3", {"acme/ads"}, 1, {"acme"}),
}


def test_each_role_sees_its_spend_area_and_nothing_else(live_site, seeded):
    who = people(seeded)
    Budget.objects.create(organization=seeded.acme, limit_usd=Decimal("50"), period="monthly")
    Budget.objects.create(team=seeded.search, limit_usd=Decimal("10"), period="monthly")
    Budget.objects.create(team=seeded.ads, limit_usd=Decimal("20"), period="monthly")
    Budget.objects.create(team=seeded.other, limit_usd=Decimal("30"), period="monthly")
    for org, team, request_id in (
        (seeded.acme, seeded.search, "req-search"),
        (seeded.acme, seeded.ads, "req-ads"),
        (seeded.globex, seeded.other, "req-globex"),
    ):
        RequestLog.objects.create(
            request_id=request_id,
            created_at=seeded.h1,
            organization=org,
            team=team,
            endpoint="chat.completions",
            status_code=200,
        )
    budgets_of = {
        "platform": {"org:acme", "team:search", "team:ads", "team:other"},
        "org_admin": {"org:acme", "team:search", "team:ads"},
        "finance": {"org:acme", "team:search", "team:ads"},
        "team_admin": {"team:search"},  # never its organisation's budget
        "team_finance": {"team:ads"},
    }
    recent_of = {
        "platform": {"req-search", "req-ads", "req-globex"},
        "org_admin": {"req-search", "req-ads"},
        "finance": {"req-search", "req-ads"},
        "team_admin": {"req-search"},
        "team_finance": {"req-ads"},
    }

    for role, (spend, teams, top, orgs) in EXPECTED.items():
        viewer = Viewer(live_site, who[role])
        overview = viewer.ok("overview", range="24h")
        assert Decimal(overview["total_usd"]) == Decimal(spend), role
        labels = {s["label"] for s in viewer.ok("spend-team", range="24h")["series"]}
        assert labels == teams, role
        assert len(viewer.ok("top-keys", range="24h")["keys"]) == top, role
        budgets = {b["label"].split(" ·")[0] for b in viewer.ok("budgets")["budgets"]}
        assert budgets == budgets_of[role], role
        assert {r["request_id"] for r in viewer.ok("recent")["records"]} == recent_of[role], role
        page = viewer.http.get("/admin/dashboard/")
        assert page.status_code == 200, role
        for org in ("acme", "globex"):
            option = f'<option value="{getattr(seeded, org).pk}">{org}</option>'
            assert (option in page.text) == (org in orgs), (role, org)
        if role != "platform":
            # Another organisation by id: refused, whether the chart is figures or rows.
            for chart in ("overview", "spend-model", "budgets", "recent"):
                refused = viewer.data(chart, org=seeded.globex.pk)
                assert refused.status_code == 403, (role, chart)
                assert "globex" not in refused.text and "10.00" not in refused.text
            assert viewer.data("overview", org=999_999).status_code == 403

    for role in ("auditor", "member", "nobody"):
        viewer = Viewer(live_site, who[role])
        assert viewer.http.get("/admin/dashboard/").status_code == 403, role
        for chart in ("overview", "spend-team", "top-keys", "budgets", "recent", "findings"):
            response = viewer.data(chart)
            assert response.status_code == 403, (role, chart)
            assert "total_usd" not in response.text and "req-" not in response.text
    signed_out = httpx.get(f"{live_site}/admin/dashboard/", timeout=10)
    assert signed_out.status_code == 302 and "/admin/login/" in signed_out.headers["location"]


def test_the_live_feed_filters_per_connection(live_site, seeded, fake_upstream):
    """Three watchers on three sockets, three requests through the gateway: each socket
    gets exactly its area's rows; people without a spend role cannot open one."""
    provider = provider_create(fake_upstream.url, api_key="sk-upstream-secret")
    model_create("gpt-4o-mini", provider)
    keys = {
        "search": key_create(project_create(seeded.search), "live-search"),
        "ads": key_create(project_create(seeded.ads), "live-ads"),
        "globex": key_create(project_create(seeded.other), "live-globex"),
    }
    who = people(seeded)
    cookies = {role: session_cookie(who[role]) for role in ("finance", "team_admin", "platform")}
    refused_cookies = [session_cookie(who[r]) for r in ("auditor", "member", "nobody")]
    ws_url = live_site.replace("http://", "ws://") + "/" + LIVE_PATH
    prefixes = {name: issued.key.prefix for name, issued in keys.items()}
    expected = {
        "finance": {prefixes["search"], prefixes["ads"]},
        "team_admin": {prefixes["search"]},
        "platform": set(prefixes.values()),
    }

    async def watch(cookie: str, want: set[str]) -> list[dict]:
        seen: list[dict] = []
        async with ws_connect(
            ws_url, origin=live_site, additional_headers={"Cookie": cookie}
        ) as ws:
            ready.release()
            while not want <= {r["key_prefix"] for r in seen}:
                seen += json.loads(await asyncio.wait_for(ws.recv(), 10))["records"]
            try:  # anything else sent with (or just after) the rows it waited for
                while True:
                    seen += json.loads(await asyncio.wait_for(ws.recv(), 1))["records"]
            except TimeoutError:
                pass
        return seen

    async def refused(cookie: str) -> int:
        try:
            async with ws_connect(ws_url, origin=live_site, additional_headers={"Cookie": cookie}):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def scenario() -> tuple[dict[str, list[dict]], list[int]]:
        nonlocal ready
        ready = asyncio.Semaphore(0)
        watchers = {
            role: asyncio.create_task(watch(cookies[role], expected[role])) for role in expected
        }
        for _ in watchers:
            await asyncio.wait_for(ready.acquire(), 10)
        async with httpx.AsyncClient(base_url=live_site, timeout=10) as http:
            for issued in keys.values():
                reply = await http.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {issued.secret}"},
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert reply.status_code == 200
        seen = {role: await task for role, task in watchers.items()}
        return seen, [await refused(c) for c in refused_cookies]

    ready: asyncio.Semaphore
    seen, refusals = asyncio.run(scenario())
    for role, rows in seen.items():
        assert {r["key_prefix"] for r in rows} == expected[role], role
    assert {r["organization_id"] for r in seen["finance"]} == {seeded.acme.pk}
    assert {r["team_id"] for r in seen["team_admin"]} == {seeded.search.pk}
    assert refusals == [403, 403, 403]
