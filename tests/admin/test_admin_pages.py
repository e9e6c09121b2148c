"""Smoke test: every registered admin's list, search, add, change and history pages render
for a superuser, and none of them contains a secret (key secret or digest, provider API key
in plaintext or as stored ciphertext)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.test import RequestFactory
from django.urls import reverse

from apps.api.models import AdminToken
from apps.api.services import admin_token_issue
from apps.audit.models import AuditCheckpoint, AuditPurge, ContentCapture, RequestLog
from apps.compliance.models import ConfigChange, EvidencePack
from apps.core.fields import EncryptedTextField
from apps.core.forms import WriteOnlySecretField
from apps.guardrails.models import GuardrailRule
from apps.identity.models import Membership, Role
from apps.keys.models import VirtualKey
from apps.mcp.models import McpServer, ToolGrant
from apps.policies.models import (
    Budget,
    BudgetAlert,
    DeploymentTagRule,
    EndUserPolicy,
    ModelAccess,
    ModelAlias,
    RateLimit,
)
from apps.portal.models import KeyLifetimeRule
from apps.providers.models import Deployment, Model, Provider
from apps.reports.models import ReportSchedule, SpendReport, UsageRollup
from apps.scim.models import ScimGroup, ScimIdentity, ScimSettings, ScimToken
from apps.scim.tokens import scim_token_issue
from apps.sso.models import OidcProvider, SignInEvent
from apps.tenancy.models import Organization, Project, Team


def assert_no_secret(content: bytes, secrets: dict[str, str], url: str) -> None:
    text = content.decode()
    for name, value in secrets.items():
        assert value not in text, f"{name} appears in {url}"


@pytest.mark.django_db
def test_every_admin_page_renders_without_secrets(admin_client, admin_user, world):
    admin_token = admin_token_issue(name="ops", organization=world.org)
    scim_token = scim_token_issue(organization=world.org, name="idp")
    scim_identity = ScimIdentity.objects.create(
        organization=world.org, user=admin_user, user_name=admin_user.username
    )
    mcp_server = McpServer.objects.create(
        name="acme-tools", url="http://127.0.0.1:9/mcp", bearer_token="mcp-upstream-token-77"
    )
    rollup = UsageRollup.objects.create(
        hour=datetime(2026, 1, 1, tzinfo=UTC),
        organization_id=world.org.pk,
        model_requested="gpt-4o-mini",
        requests=3,
        cost_usd=Decimal("0.5"),
        computed_at=datetime(2026, 1, 1, 1, tzinfo=UTC),
    )
    objects = {
        Organization: world.org,
        Team: world.team,
        Project: world.project,
        VirtualKey: world.issued.key,
        Provider: world.provider,
        Model: world.model,
        Deployment: world.model.deployments.get(),
        Budget: world.budget,
        RateLimit: world.rate_limit,
        ModelAccess: world.access,
        ContentCapture: ContentCapture.objects.create(project=world.project, mode="full"),
        GuardrailRule: GuardrailRule.objects.create(
            team=world.team, detector="email", action="redact", stage="both"
        ),
        DeploymentTagRule: DeploymentTagRule.objects.create(
            project=world.project, tag="region", allowed_values=["eu"]
        ),
        ModelAlias: ModelAlias.objects.create(
            project=world.project, alias="claude-sonnet-*", model=world.model
        ),
        EndUserPolicy: EndUserPolicy.objects.create(
            organization=world.org, end_user="trial-*", limit_usd=1, rpm=10
        ),
        BudgetAlert: BudgetAlert.objects.create(
            budget=world.budget, period_key="m202601", threshold=80, limit_usd=10, spent_usd=8
        ),
        RequestLog: world.log,
        AuditCheckpoint: AuditCheckpoint.objects.create(
            chain="acme-host-1-abcd:1",
            organization_id=world.org.pk,
            first_seq=1,
            last_seq=1,
            first_prev_hash="0" * 64,
            last_hash="f" * 64,
            records=1,
            first_at=datetime(2026, 1, 1, tzinfo=UTC),
            last_at=datetime(2026, 1, 1, tzinfo=UTC),
            sealed_at=datetime(2026, 1, 1, tzinfo=UTC),
            signature="c2ln",
        ),
        AuditPurge: AuditPurge.objects.create(
            ran_at=datetime(2026, 2, 1, tzinfo=UTC),
            organization_id=world.org.pk,
            retention_days=30,
            segments=1,
            records=1,
        ),
        User: admin_user,
        Group: world.group,
        AdminToken: admin_token.token,
        ScimToken: scim_token.token,
        ScimSettings: ScimSettings.objects.create(organization=world.org),
        ScimGroup: ScimGroup.objects.create(organization=world.org, display_name="acme-eng"),
        ScimIdentity: scim_identity,
        McpServer: mcp_server,
        ToolGrant: ToolGrant.objects.create(project=world.project, server=mcp_server),
        UsageRollup: rollup,
        SpendReport: SpendReport.objects.get(pk=rollup.pk),
        ReportSchedule: ReportSchedule.objects.create(
            organization=world.org, emails="finance@example.com", group_by="team,model"
        ),
        ConfigChange: ConfigChange.objects.first(),  # the changes made above are recorded
        EvidencePack: EvidencePack.objects.create(
            organization=world.org, period_start=date(2026, 1, 1), period_end=date(2026, 1, 31)
        ),
        KeyLifetimeRule: KeyLifetimeRule.objects.create(team=world.team, max_key_lifetime_days=30),
        OidcProvider: OidcProvider.objects.create(
            organization=world.org,
            issuer="http://127.0.0.1:9",
            client_id="odock",
            client_secret="oidc-client-secret-3c9e",
        ),
        SignInEvent: SignInEvent.objects.create(
            at=datetime(2026, 1, 1, tzinfo=UTC), username="ana", method="sso", outcome="success"
        ),
        Membership: Membership.objects.create(
            user=admin_user, role=Role.ORG_ADMIN, organization=world.org
        ),
    }
    assert set(admin.site._registry) == set(objects), "give the new admin model an object here"
    secrets = {
        **world.secrets(),
        "admin token secret": admin_token.secret,
        "admin token digest": admin_token.token.digest,
        "scim token secret": scim_token.secret,
        "scim token digest": scim_token.token.digest,
        "mcp upstream token": "mcp-upstream-token-77",
        "oidc client secret": "oidc-client-secret-3c9e",
    }
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    checked = 0

    for url in [reverse("admin:index")] + [
        reverse("admin:app_list", args=[label])
        for label in {model._meta.app_label for model in objects}
    ]:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert_no_secret(response.content, secrets, url)

    for model, model_admin in admin.site._registry.items():
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pk = objects[model].pk
        pages = {
            reverse(f"{info}_changelist"): 200,
            reverse(f"{info}_changelist") + "?q=acme": 200,
            reverse(f"{info}_change", args=[pk]): 200,
            reverse(f"{info}_history", args=[pk]): 200,
            reverse(f"{info}_add"): 200 if model_admin.has_add_permission(request) else 403,
        }
        for url, status in pages.items():
            response = admin_client.get(url)
            assert response.status_code == status, url
            assert_no_secret(response.content, secrets, url)
            checked += 1
        for field in model_admin.autocomplete_fields:
            url = reverse("admin:autocomplete") + (
                f"?app_label={model._meta.app_label}&model_name={model._meta.model_name}"
                f"&field_name={field}&term=a"
            )
            response = admin_client.get(url)
            assert response.status_code == 200, url
            assert_no_secret(response.content, secrets, url)

    assert checked == 5 * len(objects)


@pytest.mark.django_db
def test_every_encrypted_field_is_write_only_in_admin_forms(admin_user):
    """A default form would render an EncryptedTextField's plaintext in a textarea."""
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    encrypted = 0
    for model, model_admin in admin.site._registry.items():
        form = model_admin.get_form(request, obj=None)
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField) and field.name in form.base_fields:
                assert isinstance(form.base_fields[field.name], WriteOnlySecretField), field
                encrypted += 1
    assert encrypted >= 2  # provider api_key, organisation webhook secret


@pytest.mark.django_db
def test_hierarchy_pages_link_children_and_show_level_rules(admin_client, world):
    org_page = admin_client.get(reverse("admin:tenancy_organization_change", args=[world.org.pk]))
    assert reverse("admin:tenancy_team_change", args=[world.team.pk]) in org_page.content.decode()

    team_page = admin_client.get(reverse("admin:tenancy_team_change", args=[world.team.pk]))
    team_html = team_page.content.decode()
    assert reverse("admin:tenancy_project_change", args=[world.project.pk]) in team_html
    # The team's budget is in its inline; the inline hides the other level fields.
    assert 'name="budget-0-limit_usd"' in team_html
    for hidden in ("organization", "project", "key"):
        assert f'name="budget-0-{hidden}"' not in team_html

    project_page = admin_client.get(
        reverse("admin:tenancy_project_change", args=[world.project.pk])
    )
    project_html = project_page.content.decode()
    key_url = reverse("admin:keys_virtualkey_change", args=[world.issued.key.pk])
    assert key_url in project_html
    assert world.issued.key.prefix in project_html
    assert 'name="ratelimit-0-rpm"' in project_html

    key_page = admin_client.get(key_url)
    assert 'name="modelaccess-0-model"' in key_page.content.decode()


@pytest.mark.django_db
def test_level_add_page_offers_budgets_and_limits_only(admin_client, world):
    """A new team takes its budget and rate limit in the same save; routing, guardrail
    and capture rules wait for its change page."""
    html = admin_client.get(reverse("admin:tenancy_team_add")).content.decode()
    assert "budget-TOTAL_FORMS" in html and "ratelimit-TOTAL_FORMS" in html
    assert "modelalias-TOTAL_FORMS" not in html and "guardrailrule-TOTAL_FORMS" not in html
    assert "projects-TOTAL_FORMS" in html
