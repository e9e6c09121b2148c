"""scim2-tester (a third-party SCIM 2.0 conformance checker) against the live server.

Every check that fails must be listed in ``conformance_expected_failures.json`` with the
reason it fails on purpose; an unexpected failure fails the test, and so does a listed
failure that no longer happens (the list must not go stale).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.scim.conftest import tenant

EXPECTED = json.loads((Path(__file__).parent / "conformance_expected_failures.json").read_text())
FAILED = {Status.ERROR, Status.CRITICAL}


def _expected(result) -> bool:
    return any(
        entry["resource_type"] == result.resource_type
        and entry["title"] == result.title
        and entry["reason_contains"] in (result.reason or "")
        for entry in EXPECTED
    )


def test_scim2_tester_finds_no_unexpected_failure(short_connections, gateway):
    acme = tenant()
    with httpx2.Client(
        base_url=gateway.url + "/scim/v2",
        headers={"Authorization": f"Bearer {acme.secret}"},
        timeout=10,
    ) as http:
        results = check_server(SyncSCIMClient(http))

    ran = [r for r in results if r.status is not Status.SKIPPED]
    assert len(ran) > 50  # discovery, CRUD, PATCH add/remove/replace for Users and Groups
    failures = [r for r in ran if r.status in FAILED]
    unexpected = [f"{r.resource_type} {r.title}: {r.reason}" for r in failures if not _expected(r)]
    assert not unexpected, "\n".join(unexpected)
    stale = [
        entry
        for entry in EXPECTED
        if not any(_expected(r) and r.title == entry["title"] for r in failures)
    ]
    assert not stale, f"these checks pass now; remove them from the list: {stale}"
    # Both resource types were exercised end to end.
    assert {r.resource_type for r in ran if r.status is Status.SUCCESS} >= {"User", "Group"}
