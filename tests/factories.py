"""Factories that keep the hierarchy consistent (a key's project is in its team and org)."""

from __future__ import annotations

import itertools
from decimal import Decimal

from apps.keys.services import IssuedKey, key_issue
from apps.policies.models import ModelAccess
from apps.providers.models import Deployment, Model, Provider
from apps.tenancy.models import Organization, Project, Team

_seq = itertools.count(1)


def org_create(name: str | None = None) -> Organization:
    return Organization.objects.create(name=name or f"org-{next(_seq)}")


def team_create(org: Organization | None = None, name: str | None = None) -> Team:
    return Team.objects.create(organization=org or org_create(), name=name or f"team-{next(_seq)}")


def project_create(team: Team | None = None, name: str | None = None) -> Project:
    return Project.objects.create(team=team or team_create(), name=name or f"proj-{next(_seq)}")


def key_create(project: Project | None = None, name: str | None = None, **kwargs) -> IssuedKey:
    return key_issue(
        project=project or project_create(), name=name or f"key-{next(_seq)}", **kwargs
    )


def provider_create(
    api_base: str,
    *,
    name: str | None = None,
    api_key: str = "sk-upstream-secret",
    kind: str = "openai",
) -> Provider:
    return Provider.objects.create(
        name=name or f"prov-{next(_seq)}", kind=kind, api_base=api_base, api_key=api_key
    )


def model_create(
    name: str,
    provider: Provider,
    *,
    upstream_model: str | None = None,
    input_per_mtok: str = "0.15",
    output_per_mtok: str = "0.60",
) -> Model:
    model = Model.objects.create(
        name=name, input_per_mtok=Decimal(input_per_mtok), output_per_mtok=Decimal(output_per_mtok)
    )
    Deployment.objects.create(model=model, provider=provider, upstream_model=upstream_model or name)
    return model


def allow_models(level_obj, *models: Model) -> None:
    field = {
        "Organization": "organization",
        "Team": "team",
        "Project": "project",
        "VirtualKey": "key",
    }[type(level_obj).__name__]
    for m in models:
        ModelAccess.objects.create(model=m, **{field: level_obj})


def holds_released(redis_client, counter: str, timeout: float = 5.0) -> None:
    """Wait until a budget counter's holds (``<counter>:r``) are back to zero.

    A settlement may wait up to ``settle_delay_seconds`` for the next reserve to share its
    Redis write, and the record can land before it: a test that reads Redis right after
    the records would race it. A hold that never goes away still fails, after ``timeout``.
    """
    import time

    deadline = time.monotonic() + timeout
    while int(redis_client.get(counter + ":r") or 0) != 0:
        assert time.monotonic() < deadline, f"{counter}:r still holds budget (leaked)"
        time.sleep(0.01)


def records_wait(gateway, count: int, timeout: float = 5.0) -> list:
    """The request-log rows once ``count`` exist (a record is submitted just after the
    response's last byte, so a fast client can ask before it is queued)."""
    import time

    from apps.audit.models import RequestLog

    deadline = time.monotonic() + timeout
    while True:
        gateway.recorder.flush(timeout)
        rows = list(RequestLog.objects.order_by("created_at"))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def request_log_create(key, cost_usd: str, *, created_at=None, model_requested: str = "m"):
    """A settled request of ``key`` costing ``cost_usd`` (now unless ``created_at``), with
    the ids of every level, as the gateway's recorder writes them."""
    from django.utils import timezone

    from apps.audit.models import RequestLog

    project = key.project
    return RequestLog.objects.create(
        request_id=f"req-{next(_seq)}",
        created_at=created_at or timezone.now(),
        organization_id=project.team.organization_id,
        team_id=project.team_id,
        project_id=project.pk,
        key_id=key.pk,
        key_prefix=key.prefix,
        endpoint="chat.completions",
        model_requested=model_requested,
        status_code=200,
        cost_usd=Decimal(cost_usd),
    )


def odock_apply_text(tmp_path, text: str) -> str:
    """Run ``manage.py odock_apply`` on ``text`` written to a file; its printed summary."""
    from io import StringIO

    from django.core.management import call_command

    path = tmp_path / "odock.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("odock_apply", str(path), stdout=out)
    return out.getvalue()


def audit_record(key, request_id: str, created_at: float, **overrides) -> dict:
    """A request record as the gateway's record stage hands it to the audit writer (before
    ``prepare`` and chain linking), for ``key``; ``overrides`` replace any field."""
    record = {
        "request_id": request_id,
        "created_at": created_at,
        "organization_id": key.project.team.organization_id,
        "team_id": key.project.team_id,
        "project_id": key.project_id,
        "key_id": key.pk,
        "key_prefix": key.prefix,
        "user_id": None,
        "endpoint": "chat.completions",
        "model_requested": "gpt-4o-mini",
        "model_served": "gpt-4o-mini",
        "stream": False,
        "status_code": 200,
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": 0,
        "usage_estimated": False,
        "cost_usd": "0.01",
        "latency_ms": 12.5,
        "upstream_ms": 10.0,
        "overhead_ms": 2.5,
        "ttft_ms": None,
        "client_disconnected": False,
        "client_ip": "127.0.0.1",
        "decisions": [],
        "attempts": [],
        "findings": [],
        "content": None,
    }
    record.update(overrides)
    return record
