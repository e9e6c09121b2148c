"""One consistent set of objects, one of every admin-registered model, and their secrets."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Model as DjangoModel
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.keys.services import IssuedKey
from apps.policies.models import Budget, ModelAccess, RateLimit
from apps.providers.models import Model, Provider
from apps.tenancy.models import Organization, Project, Team
from tests.factories import (
    key_create,
    model_create,
    org_create,
    project_create,
    provider_create,
    team_create,
)

UPSTREAM_KEY = "sk-upstream-plaintext-4f2a9c"
WEBHOOK_SECRET = "whsec-plaintext-91be3d"


def raw_column(obj: DjangoModel, column: str) -> str:
    """The column as stored, bypassing the field's decryption."""
    table = connection.ops.quote_name(obj._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [obj.pk])  # noqa: S608
        return cursor.fetchone()[0]


RULE_INLINES = (
    "budget",
    "ratelimit",
    "modelaccess",
    "modelalias",
    "deploymenttagrule",
    "contentcapture",
    "guardrailrule",
)


def empty_inlines(*prefixes: str) -> dict[str, str]:
    """The management forms of inlines posted without rows (default: a level page's rule
    inlines), for building a change page's POST by hand."""
    data: dict[str, str] = {}
    for prefix in prefixes or RULE_INLINES:
        data |= {f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"}
    return data


def raw_provider_api_key(provider: Provider) -> str:
    return raw_column(provider, "api_key")


@dataclass
class World:
    org: Organization
    team: Team
    project: Project
    issued: IssuedKey
    provider: Provider
    model: Model
    budget: Budget
    rate_limit: RateLimit
    access: ModelAccess
    log: RequestLog
    group: Group

    def secrets(self) -> dict[str, str]:
        """Everything that must never appear in an admin page."""
        return {
            "key secret": self.issued.secret,
            "key digest": self.issued.key.digest,
            "provider api_key": UPSTREAM_KEY,
            "provider ciphertext": raw_provider_api_key(self.provider),
            "webhook secret": WEBHOOK_SECRET,
            "webhook ciphertext": raw_column(self.org, "alert_webhook_secret"),
        }


@pytest.fixture
def world(db) -> World:
    org = org_create("acme")
    org.alert_webhook_secret = WEBHOOK_SECRET
    org.save()
    team = team_create(org, "search")
    project = project_create(team, "assistant")
    issued = key_create(project, "assistant-prod")
    provider = provider_create("http://127.0.0.1:9001/v1", name="openai-main", api_key=UPSTREAM_KEY)
    model = model_create("gpt-4o-mini", provider)
    return World(
        org=org,
        team=team,
        project=project,
        issued=issued,
        provider=provider,
        model=model,
        budget=Budget.objects.create(team=team, limit_usd=Decimal("10")),
        rate_limit=RateLimit.objects.create(project=project, rpm=60),
        access=ModelAccess.objects.create(key=issued.key, model=model),
        log=RequestLog.objects.create(
            request_id="req-world",
            created_at=timezone.now(),
            organization=org,
            team=team,
            project=project,
            key=issued.key,
            key_prefix=issued.key.prefix,
            endpoint="chat.completions",
            model_requested="gpt-4o-mini",
            status_code=200,
        ),
        group=Group.objects.create(name="operators"),
    )
