"""A signed-in browser-less client of the live site (uvicorn on loopback, the production
ASGI stack): real sessions, real CSRF tokens, real HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import (
    live_site,  # noqa: F401 - the fixture, shared
    make_user,
)

PASSWORD = "pw-dash-123456"  # noqa: S105 - make_user's test password
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_token(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


class Session:
    """One person's cookies against the live site."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30, follow_redirects=False)

    def login(self, username: str) -> Session:
        page = self.http.get("/admin/login/")
        answer = self.http.post(
            "/admin/login/",
            data={
                "csrfmiddlewaretoken": csrf_token(page.text),
                "username": username,
                "password": PASSWORD,
                "next": "/admin/",
            },
        )
        assert answer.status_code == 302, answer.text[:500]
        return self

    def get(self, url: str) -> httpx.Response:
        return self.http.get(url)

    def submit(self, url: str, data: dict[str, Any]) -> httpx.Response:
        """GET the form (for its CSRF token), then POST ``data`` as the browser would."""
        page = self.http.get(url)
        assert page.status_code == 200, (url, page.status_code)
        return self.http.post(url, data={"csrfmiddlewaretoken": csrf_token(page.text), **data})

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def sign_in(live_site) -> Iterator[Any]:  # noqa: F811 - the shared fixture, used
    """``sign_in(username, role=..., organization=..., team=...)``: a new user with that
    membership, signed in; returns their :class:`Session`."""
    sessions: list[Session] = []

    def start(username: str, **membership: Any) -> Session:
        make_user(username, staff=False, **membership)
        session = Session(live_site).login(username)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.close()


def chat_with_key(base: str, secret: str, model: str, *, wait: float = 10.0) -> httpx.Response:
    """A chat request with ``secret`` through the gateway, retried while the gateway has
    not yet reloaded its snapshot (a new key answers 401 until then, ~1 s)."""
    deadline = time.monotonic() + wait
    while True:
        reply = httpx.post(
            f"{base}/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        if reply.status_code != 401 or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)
