"""A real OpenID Connect provider (the certified npm ``oidc-provider``, run by
``tests/sso/provider/server.js``) and the whole Django site, both on loopback.

The provider's development interactions are its real login and consent pages; the
accounts it knows (and so each person's ``groups``) are a JSON file the test rewrites."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.conftest import ServerThread

PROVIDER_DIR = Path(__file__).parent / "provider"
CLIENT_ID = "odock-gateway"
CLIENT_SECRET = "odock-test-client-secret-7f3a9c"  # a test value: must never show in the admin
OTHER_CLIENT_ID = "another-app"
OTHER_CLIENT_SECRET = "another-app-secret"
OTHER_REDIRECT = "http://127.0.0.1:9/callback"  # never followed: the test reads the code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def provider_installed() -> Path:
    """``npm ci`` into tests/sso/provider once (pinned by package-lock.json)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the OIDC provider (apt-get install -y npm)")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            check=True,
            timeout=300,
            capture_output=True,
        )
    return PROVIDER_DIR


@dataclass
class OidcTestProvider:
    issuer: str
    accounts_file: Path
    process: subprocess.Popen

    def set_account(self, account_id: str, **claims: object) -> None:
        accounts = json.loads(self.accounts_file.read_text())
        accounts[account_id] = claims
        self.accounts_file.write_text(json.dumps(accounts))


@pytest.fixture
def live_site(transactional_db, monkeypatch) -> Iterator[str]:
    """The whole Django site (admin, /sso/) under uvicorn on loopback."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
    from django.core.asgi import get_asgi_application
    from django.db import connections

    from apps.sso.services import discovery_forget

    # Each ASGI request runs in a fresh thread: no connection may outlive it.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    discovery_forget()
    from odock.asgi_router import build_application
    from odock.gateway import build_gateway

    # The production ASGI stack (as tests/dashboard does): the admin and /sso/ are Django's.
    server = ServerThread(
        build_application(build_gateway(), ASGIStaticFilesHandler(get_asgi_application()))
    ).start()
    yield server.url
    server.stop()
    discovery_forget()


def _provider_start(
    folder: Path, tmp_path: Path, accounts: Path, clients: Path
) -> tuple[subprocess.Popen, str]:
    """Start server.js on a free port and wait (bounded) until its discovery answers. A
    port taken between choosing and binding it (tests run in parallel on this machine)
    makes node exit at once: then another port is tried."""
    for attempt in range(3):
        port = _free_port()
        log_path = tmp_path / f"provider-{attempt}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [shutil.which("node") or "node", "server.js"],
                cwd=folder,
                env={
                    "PATH": "/usr/bin:/bin",
                    "PORT": str(port),
                    "ACCOUNTS_FILE": str(accounts),
                    "CLIENTS_FILE": str(clients),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        issuer = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1)
                if answer.status_code == 200 and answer.json().get("issuer") == issuer:
                    return process, issuer
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        process.kill()
        process.wait(5)
        if "EADDRINUSE" not in log_path.read_text():
            break
    raise RuntimeError(f"the OIDC provider did not start: {log_path.read_text()[-2000:]}")


@pytest.fixture
def oidc_provider(
    provider_installed: Path, live_site: str, tmp_path: Path
) -> Iterator[OidcTestProvider]:
    accounts = tmp_path / "accounts.json"
    accounts.write_text("{}")
    clients = tmp_path / "clients.json"
    clients.write_text(
        json.dumps(
            [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": [f"{live_site}/sso/callback/"],
                    "token_endpoint_auth_method": "client_secret_post",
                },
                {
                    "client_id": OTHER_CLIENT_ID,
                    "client_secret": OTHER_CLIENT_SECRET,
                    "redirect_uris": [OTHER_REDIRECT],
                    "token_endpoint_auth_method": "client_secret_post",
                },
            ]
        )
    )
    process, issuer = _provider_start(provider_installed, tmp_path, accounts, clients)
    yield OidcTestProvider(issuer=issuer, accounts_file=accounts, process=process)
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.I)


def provider_form_action(response: httpx.Response) -> str:
    match = _FORM.search(response.text)
    assert match, f"no form on the provider's page {response.url}: {response.text[:500]}"
    return urljoin(str(response.url), unescape(match.group(1)))


def sso_sign_in(
    client: httpx.Client, site: str, org: str, login: str, *, query: str = ""
) -> httpx.Response:
    """Walk the flow as a browser would: Odock → the provider's login form → its consent
    page → back to Odock's callback → wherever Odock sends the person."""
    page = client.get(f"{site}/sso/{org}/login/{query}", follow_redirects=True)
    assert page.status_code == 200, page.text[:500]
    assert 'name="login"' in page.text, page.text[:500]
    page = client.post(
        provider_form_action(page),
        data={"prompt": "login", "login": login, "password": "any-password"},
        follow_redirects=True,
    )
    if 'name="prompt" value="consent"' in page.text:
        page = client.post(
            provider_form_action(page), data={"prompt": "consent"}, follow_redirects=True
        )
    return page
