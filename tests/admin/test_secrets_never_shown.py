"""Stored secrets are write-only everywhere: no admin page (for any permission set), no
management-API answer, no export and no error ever contains one after it was entered —
plaintext or ciphertext. Pages show only "set / not set" and when it last changed, and an
admin can still set or replace a secret (a blank field keeps the stored one).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection, models
from django.test import Client
from django.test.utils import isolate_apps
from django.urls import reverse
from django.utils import timezone

from apps.api.services import admin_token_issue
from apps.audit.models import RequestLog
from apps.compliance.models import ConfigChange
from apps.core.checks import admin_errors, model_errors, secrets_write_only
from apps.core.fields import EncryptedTextField
from apps.identity.models import Membership, Role
from apps.mcp.models import McpServer
from apps.providers.models import Provider
from apps.reports.models import ReportSchedule
from apps.sso.models import OidcProvider
from apps.tenancy.models import Organization
from tests.factories import key_create, model_create, org_create, project_create, team_create

PROVIDER_KEY = "sk-prov-plaintext-4f2a9c7d"
MCP_TOKEN = "mcp-bearer-plaintext-51ab"
MCP_HEADER = "mcp-header-plaintext-a8c3"
MCP_ENV = "mcp-env-plaintext-9e0f"
WEBHOOK = "whsec-plaintext-77de01"
OIDC_SECRET = "oidc-client-secret-plaintext-2b7e"


def raw(obj, column: str) -> str:
    table = connection.ops.quote_name(obj._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [obj.pk])  # noqa: S608
        return cursor.fetchone()[0]


class Secrets:
    """One object of every model holding a secret, and every form the secrets take."""

    def __init__(self) -> None:
        self.org = org_create("acme")
        self.org.alert_webhook_url = "http://127.0.0.1:9/hook"
        self.org.alert_webhook_secret = WEBHOOK
        self.org.save()
        self.project = project_create(team_create(self.org, "search"), "assistant")
        self.key = key_create(self.project, "prod")
        self.provider = Provider.objects.create(
            name="openai-main",
            kind="openai",
            api_base="http://127.0.0.1:9/v1",
            api_key=PROVIDER_KEY,
        )
        self.model = model_create("gpt-4o-mini", self.provider)
        self.http_server = McpServer.objects.create(
            name="tickets",
            url="http://127.0.0.1:9/mcp",
            bearer_token=MCP_TOKEN,
            headers=json.dumps({"X-Api-Key": MCP_HEADER}),
        )
        self.stdio_server = McpServer.objects.create(
            name="local",
            transport="stdio",
            command="python",
            args=["-m", "server"],
            environment=json.dumps({"GITHUB_TOKEN": MCP_ENV}),
        )
        self.schedule = ReportSchedule.objects.create(
            organization=self.org, webhook_url="http://127.0.0.1:9/report"
        )
        self.oidc = OidcProvider.objects.create(
            organization=self.org,
            issuer="http://127.0.0.1:9",
            client_id="odock",
            client_secret=OIDC_SECRET,
        )
        RequestLog.objects.create(
            request_id="req-secrets",
            created_at=timezone.now(),
            organization=self.org,
            key_prefix=self.key.key.prefix,
            endpoint="chat.completions",
            model_requested="gpt-4o-mini",
            status_code=200,
        )
        self.never = {
            "provider key": PROVIDER_KEY,
            "provider ciphertext": raw(self.provider, "api_key"),
            "mcp token": MCP_TOKEN,
            "mcp token ciphertext": raw(self.http_server, "bearer_token"),
            "mcp header": MCP_HEADER,
            "mcp headers ciphertext": raw(self.http_server, "headers"),
            "mcp env": MCP_ENV,
            "mcp env ciphertext": raw(self.stdio_server, "environment"),
            "webhook secret": WEBHOOK,
            "webhook ciphertext": raw(self.org, "alert_webhook_secret"),
            "virtual key secret": self.key.secret,
            "oidc client secret": OIDC_SECRET,
            "oidc client secret ciphertext": raw(self.oidc, "client_secret"),
        }

    def assert_absent(self, content: bytes, where: str) -> None:
        text = content.decode(errors="replace")
        for name, value in self.never.items():
            assert value not in text, f"{name} shown by {where}"


@pytest.fixture
def secrets(db) -> Secrets:
    return Secrets()


def person(
    username: str, *roles: str, org: Organization | None = None, superuser: bool = False
) -> Client:
    """A logged-in client for someone holding ``roles`` (at ``org``; a platform admin at no
    level). Admin access comes from memberships, not from is_staff or model permissions."""
    user = User.objects.create(username=username, is_superuser=superuser)
    for role in roles:
        level = None if role == Role.PLATFORM_ADMIN else org
        Membership.objects.create(user=user, role=role, organization=level)
    client = Client()
    client.force_login(user)
    return client


def admin_pages(secrets: Secrets) -> list[str]:
    """Every page of every admin whose model holds (or points at) a secret."""
    pages = [reverse("admin:index")]
    for obj in (
        secrets.provider,
        secrets.http_server,
        secrets.stdio_server,
        secrets.org,
        secrets.schedule,
        secrets.oidc,
    ):
        info = f"admin:{obj._meta.app_label}_{obj._meta.model_name}"
        pages += [
            reverse(f"{info}_changelist"),
            reverse(f"{info}_changelist") + "?q=a",
            reverse(f"{info}_change", args=[obj.pk]),
            reverse(f"{info}_history", args=[obj.pk]),
            reverse(f"{info}_delete", args=[obj.pk]),
        ]
    pages.append(reverse("admin:compliance_configchange_changelist"))
    pages += [
        reverse("admin:compliance_configchange_change", args=[change.pk])
        for change in ConfigChange.objects.all()
    ]
    return pages


@isolate_apps("apps.core")
def test_system_checks_refuse_a_secret_without_its_guards():
    class Bare(models.Model):
        token = EncryptedTextField(blank=True)

        class Meta:
            app_label = "core"

        def __str__(self) -> str:
            return "bare"

    class Leaky(admin.ModelAdmin):
        list_display = ("name", "api_key")
        search_fields = ("=api_key", "name")
        list_filter = (("api_key", admin.AllValuesFieldListFilter),)

    assert sorted(e.id for e in model_errors(Bare)) == ["odock.E001", "odock.E002"]
    errors = admin_errors(Leaky, Provider)
    assert sorted(e.id for e in errors) == ["odock.E003"] + ["odock.E004"] * 3
    assert not secrets_write_only()  # the project's own models and admins pass


def test_every_secret_holding_model_is_checked_here(db):
    """A model given a new secret must be added to Secrets above."""
    holders = {
        model._meta.label
        for model in admin.site._registry
        if any(isinstance(f, EncryptedTextField) for f in model._meta.concrete_fields)
    }
    assert holders == {
        "providers.Provider",
        "mcp_gateway.McpServer",
        "tenancy.Organization",
        "sso.OidcProvider",
    }


@pytest.mark.parametrize(
    "who",
    ["finance and auditor", "superuser", "org admin", "platform admin"],
)
def test_no_admin_page_shows_a_stored_secret(secrets, who):
    client = {
        # Read-only everywhere: configuration, schedules and the change trail.
        "finance and auditor": lambda: person(
            "viewer", Role.FINANCE, Role.AUDITOR, org=secrets.org
        ),
        "superuser": lambda: person("root", superuser=True),
        # Changes the organisation (its webhook secret), reads the catalog.
        "org admin": lambda: person("editor", Role.ORG_ADMIN, org=secrets.org),
        # Changes everything, providers and MCP servers included.
        "platform admin": lambda: person("platform", Role.PLATFORM_ADMIN),
    }[who]()
    seen = 0
    for url in admin_pages(secrets):
        response = client.get(url)
        # 302: an object outside the person's area "does not exist" (back to the index).
        assert response.status_code in (200, 302, 403), (url, response.status_code)
        assert "/login/" not in response.get("Location", ""), (url, who)
        secrets.assert_absent(response.content, f"{url} as {who}")
        seen += response.status_code == 200
    assert seen >= 16


def test_view_only_roles_see_set_or_not_set_and_when_it_changed(secrets):
    client = person("viewer", Role.FINANCE, org=secrets.org)
    html = client.get(
        reverse("admin:providers_provider_change", args=[secrets.provider.pk])
    ).content.decode()
    assert "Set, last changed" in html
    html = client.get(
        reverse("admin:mcp_gateway_mcpserver_change", args=[secrets.stdio_server.pk])
    ).content.decode()
    assert "Not set" in html and "Set, last changed" in html  # token unset, environment set
    html = client.get(reverse("admin:tenancy_organization_change", args=[secrets.org.pk]))
    assert "Set, last changed" in html.content.decode()


def test_a_secret_gets_a_changed_at_when_set_replaced_or_cleared_only(secrets):
    provider = Provider.objects.get(pk=secrets.provider.pk)
    first = provider.api_key_changed_at
    assert first is not None and first <= timezone.now()
    provider.api_base = "http://127.0.0.1:10/v1"
    provider.save()
    assert Provider.objects.get(pk=provider.pk).api_key_changed_at == first  # not a change
    provider.api_key = "sk-prov-replaced"
    provider.save(update_fields=["api_key"])
    replaced = Provider.objects.get(pk=provider.pk).api_key_changed_at
    assert replaced > first
    assert McpServer.objects.get(pk=secrets.http_server.pk).environment_changed_at is None
    assert McpServer.objects.get(pk=secrets.http_server.pk).headers_changed_at is not None
    assert Organization.objects.get(pk=secrets.org.pk).alert_webhook_secret_changed_at


def inline_data(page) -> dict[str, str]:
    """The inline formsets of a change page, posted back as they were rendered."""
    data: dict[str, str] = {}
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        for name in formset.management_form.fields:
            data[f"{formset.prefix}-{name}"] = str(formset.management_form[name].value() or 0)
        for form in formset.initial_forms:
            for bound in form:
                value = bound.value()
                if value is True:
                    data[bound.html_name] = "on"
                elif value not in (None, False):
                    data[bound.html_name] = str(value)
    return data


def org_form(org: Organization, page) -> dict[str, str]:
    return {
        "name": org.name,
        "display_name": "",
        "is_active": "on",
        "outage_policy": "fail_closed",
        "alert_webhook_url": org.alert_webhook_url,
        "alert_webhook_secret": "",
        "alert_emails": "",
        "audit_retention_days": "",
        "response_retention_days": "30",
        **inline_data(page),
    }


def test_admin_sets_replaces_and_keeps_a_secret_without_ever_seeing_it(secrets):
    client = person("root", superuser=True)
    url = reverse("admin:tenancy_organization_change", args=[secrets.org.pk])
    form = org_form(secrets.org, client.get(url))
    before = Organization.objects.get(pk=secrets.org.pk).alert_webhook_secret_changed_at

    response = client.post(url, {**form, "display_name": "Acme"})  # blank: keep
    assert response.status_code == 302, response.content.decode()[:3000]
    org = Organization.objects.get(pk=secrets.org.pk)
    assert org.alert_webhook_secret == WEBHOOK and org.display_name == "Acme"
    assert org.alert_webhook_secret_changed_at == before

    response = client.post(url, {**form, "alert_webhook_secret": "whsec-new-one-123"})
    assert response.status_code == 302
    org = Organization.objects.get(pk=secrets.org.pk)
    assert org.alert_webhook_secret == "whsec-new-one-123"
    assert org.alert_webhook_secret_changed_at > before
    secrets.never["new webhook secret"] = "whsec-new-one-123"
    # An invalid submission re-renders the form: the typed secret is not echoed either.
    response = client.post(
        url, {**form, "alert_webhook_secret": "whsec-typed-9", "alert_emails": "not-an-address"}
    )
    assert response.status_code == 200
    assert "whsec-typed-9" not in response.content.decode()
    assert Organization.objects.get(pk=secrets.org.pk).alert_webhook_secret == "whsec-new-one-123"
    for page_url in (url, reverse("admin:tenancy_organization_history", args=[secrets.org.pk])):
        secrets.assert_absent(client.get(page_url).content, page_url)
    trail = ConfigChange.objects.filter(object_type="tenancy.organization").order_by("pk").last()
    assert trail.changes["alert_webhook_secret"] == "changed"


# --- the management API, over real HTTP -----------------------------------------------------


def api_paths(secrets: Secrets) -> list[str]:
    day = datetime.now(UTC).date()
    return [
        "/api/v1/orgs",
        "/api/v1/keys",
        f"/api/v1/keys/{secrets.key.key.pk}/policy",
        "/api/v1/spend",
        "/api/v1/audit/records?include_content=true",
        "/api/v1/audit/records/req-secrets",
        "/api/v1/audit/export?format=jsonl",
        "/api/v1/audit/export?format=csv",
        f"/api/v1/reports/spend?start={day - timedelta(days=1)}&end={day + timedelta(days=1)}",
        "/api/v1/openapi.json",
        "/api/v1/keys/999999/policy",  # an error answer
        "/api/v1/audit/records?cost_min=x",  # a validation error
    ]


def test_no_api_answer_shows_a_stored_secret(transactional_db, gateway_factory):
    secrets = Secrets()
    gateway = gateway_factory()
    tokens = {
        "org token": admin_token_issue(name="acme-ops", organization=secrets.org).secret,
        "platform token": admin_token_issue(name="platform").secret,
    }
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for who, token in tokens.items():
            for path in api_paths(secrets):
                response = client.get(path, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code < 500, (path, response.status_code)
                secrets.assert_absent(response.content, f"{path} with the {who}")
            export = client.get(
                "/api/v1/audit/export?format=csv", headers={"Authorization": f"Bearer {token}"}
            )
            assert list(csv.reader(io.StringIO(export.text)))[1:]  # something was exported
