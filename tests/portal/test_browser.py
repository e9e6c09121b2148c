"""The done-means in a real headless browser (Debian's chromium driven by Playwright,
against the whole ASGI stack on loopback): a member signs in to the portal, tries a key
budget looser than her team's and is refused with the reason, mints the key (its secret
shown once), calls the gateway with it, and sees the key and its remaining budget at
every level. Screenshots of each step are kept.

Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls,
so every database write happens before the browser starts and the checks after it closes
(the gateway and the portal's own requests are served by the server's threads)."""

from __future__ import annotations

import shutil
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from apps.keys.models import VirtualKey
from apps.policies.models import Budget
from tests.factories import provider_create
from tests.portal.conftest import PASSWORD

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
)


def _shot(page, name: str, kept: list[Path]) -> None:
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"portal-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    kept.append(path)


def _call_gateway(url: str, secret: str) -> None:
    """The new key serves once the gateways' snapshot has it (polled each second)."""
    deadline = time.monotonic() + 10
    while True:
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        if reply.status_code != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply.status_code == 200, reply.text


def test_member_mints_a_key_in_the_portal(world, live_site, fake_upstream):
    # Each answer has 10 output tokens at 1,000 USD per million: exactly 0.01 USD.
    fake_upstream.behavior.completion_tokens = 10
    world.mini.deployments.create(provider=provider_create(fake_upstream.url), upstream_model="m")
    world.mini.input_per_mtok, world.mini.output_per_mtok = Decimal(0), Decimal(1000)
    world.mini.save()
    url = live_site.url
    kept: list[Path] = []
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/portal/")
            assert "/portal/login/" in page.url
            _shot(page, "1-login", kept)
            page.fill("#id_username", "ann")
            page.fill("#id_password", PASSWORD)
            page.click("#password-login button[type=submit]")
            page.wait_for_selector("#new-key")
            page.click("#new-key")

            # A key budget looser than the team's 100 USD a month: refused, with the reason.
            page.select_option("#id_project", str(world.web.pk))
            page.fill("#id_name", "ann-laptop")
            page.fill("#id_lifetime_days", "30")
            page.check("input[name=models][value=gpt-4o-mini]")
            page.fill("#id_budget_usd", "500")
            page.click("#key-form button[type=submit]")
            reason = page.text_content("#error-budget_usd")
            assert reason == (
                "limit_usd 500 is looser than team:search's monthly budget of 100.00 USD "
                "(a child's limit can only be tighter)"
            )
            assert page.query_selector("#secret") is None
            _shot(page, "2-refused-looser-budget", kept)

            # Within the team's budget: minted, the secret shown this once.
            page.fill("#id_budget_usd", "25")
            page.click("#key-form button[type=submit]")
            secret = page.text_content("#secret").strip()
            assert secret.startswith("sk-odock-")
            _shot(page, "3-secret-shown-once", kept)

            _call_gateway(url, secret)  # spends 0.01 USD

            # The key and its remaining budget at every level (spend lands with the record).
            page.click("#to-key")
            deadline = time.monotonic() + 10
            key_row = 'tr[data-level="key:ann-laptop"] td.remaining'
            while page.text_content(key_row) != "24.99" and time.monotonic() < deadline:
                time.sleep(0.3)
                page.reload()
            assert page.text_content(key_row) == "24.99"
            assert page.text_content('tr[data-level="team:search"] td.remaining') == "99.99"
            assert page.text_content("#spend") == "0.01 USD"
            assert secret not in page.content()
            _shot(page, "4-key-remaining-budget", kept)

            page.click("header a")  # My keys
            row = page.text_content('tr[data-key="ann-laptop"]')
            assert "key:ann-laptop: 24.99 of 25.00 USD monthly" in " ".join(row.split())
            assert "team:search: 99.99 of 100.00 USD monthly" in " ".join(row.split())
            assert secret not in page.content()
            _shot(page, "5-my-keys", kept)
            assert errors == []
        finally:
            browser.close()

    key = VirtualKey.objects.get(name="ann-laptop")
    assert key.owner == world.people["ann"]
    assert Budget.objects.filter(key=key).get().limit_usd == Decimal("25")
    assert Budget.objects.filter(key__isnull=False).count() == 1  # the refused one left none
    for path in kept:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
