"""The management API against its own OpenAPI schema, with schemathesis (``--checks all``):
a real gateway under uvicorn, a platform token, a fixed seed and bounded examples.

Every check must pass: no 5xx, every status code and content type documented, every
answer matching its schema, every request the schema allows accepted, every request it
refuses rejected. The two rules a schema cannot state are in ``schemathesis_hooks.py``;
the regression tests in test_management_api.py pin what it found (and that a refused
request changes nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from apps.api.services import admin_token_issue
from apps.audit.models import RequestLog
from apps.policies.models import Budget
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    team_create,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 10
SEED = 12


def seed_data() -> str:
    """Two organisations with keys, budgets and audit records; a platform token."""
    provider = provider_create("http://127.0.0.1:9/v1", name="openai-main")
    model = model_create("gpt-4o-mini", provider)
    now = timezone.now()
    for name in ("acme", "globex"):
        org = org_create(name)
        team = team_create(org, "search")
        project = project_create(team, "assistant")
        key = key_create(project, "prod").key
        Budget.objects.create(team=team, limit_usd=Decimal("10"))
        Budget.objects.create(key=key, model=model, limit_usd=Decimal("1"))
        for i in range(5):
            RequestLog.objects.create(
                request_id=f"req-{name}-{i}",
                created_at=now - timedelta(minutes=i),
                organization=org,
                team=team,
                project=project,
                key=key,
                key_prefix=key.prefix,
                endpoint="chat.completions",
                model_requested="gpt-4o-mini",
                status_code=(200, 429, 502)[i % 3],
                cost_usd=Decimal("0.001") * i,
            )
    return admin_token_issue(name="schemathesis").secret


@pytest.mark.slow
def test_the_management_api_keeps_its_openapi_contract(gateway_factory, tmp_path):
    if not SCHEMATHESIS.exists():
        pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
    token = seed_data()
    gateway = gateway_factory()
    report = Path(os.environ.get("ODOCK_SCHEMATHESIS_REPORT", tmp_path / "schemathesis.txt"))
    started = time.monotonic()
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{gateway.url}/api/v1/openapi.json",
            "--url",
            gateway.url,
            "--checks",
            "all",
            "--seed",
            str(SEED),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--header",
            f"Authorization: Bearer {token}",
            "--no-color",
        ],
        cwd=tmp_path,  # its .schemathesis/ cache stays out of the repository
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    report.write_text(result.stdout + result.stderr)
    # Exit 0: no check failed (not_a_server_error among them) and nothing errored.
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in result.stdout, f"the {phase} phase did not run and pass"
    # About 35 s on an idle 2-core machine (most of it the coverage phase, which the
    # example bound does not shorten); the margin is for a CI machine running other work.
    assert elapsed < 90, f"schemathesis took {elapsed:.0f} s"
