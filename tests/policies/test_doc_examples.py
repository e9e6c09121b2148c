"""The example files docs/config.md links to: each applies with ``odock_apply`` on an empty
database, has the effect its comments describe (checked on the compiled policy snapshot
where the gateway reads it), and re-applies as a no-op. Every example is linked from the
docs and tested here, so a new one without a test fails."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.gateway.snapshot import KeyEntry
from apps.guardrails.models import GuardrailRule
from apps.keys.models import VirtualKey
from apps.keys.services import key_secret_matches
from apps.mcp.models import McpServer, ToolGrant
from apps.policies.compile import snapshot_compile
from apps.policies.models import Budget, EndUserPolicy
from apps.providers.models import Model
from apps.sso.models import GroupMapping, OidcProvider
from apps.tenancy.models import Organization

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples"
# The environment variables the examples read their secrets from.
SECRETS = {
    "OPENAI_API_KEY": "sk-example-openai",
    "AZURE_OPENAI_KEY": "example-azure",
    "ANTHROPIC_API_KEY": "sk-ant-example",
    "GEMINI_API_KEY": "example-gemini",
    "AWS_SECRET_ACCESS_KEY": "example-aws-secret",
    "ACME_WEBHOOK_SECRET": "example-webhook-secret",
    "TICKETS_MCP_TOKEN": "example-tickets-token",
    "TICKETS_TENANT": "acme",
    "FILES_GITHUB_TOKEN": "example-github-token",
    "ACME_OIDC_SECRET": "example-oidc-secret",
}


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def apply(name: str) -> str:
    out = StringIO()
    call_command("odock_apply", str(EXAMPLES / name), stdout=out)
    return out.getvalue()


def compiled_key(name: str) -> KeyEntry:
    digest = VirtualKey.objects.get(name=name).digest
    return snapshot_compile().keys_by_digest[digest]


def check_hierarchy() -> None:
    acme = Organization.objects.get(name="acme")
    assert acme.display_name == "ACME Corporation"
    assert sorted(acme.teams.values_list("name", flat=True)) == ["research", "search"]
    prod = VirtualKey.objects.get(name="assistant-prod")
    assert key_secret_matches(key=prod, secret="sk-odock-example-assistant-prod")
    assert compiled_key("assistant-prod").active
    assert compiled_key("old-notebook").revoked


def check_budgets_limits() -> None:
    key = compiled_key("assistant-prod")
    assert key.allowed_models == frozenset({"gpt-4o-mini"})  # project ∩ team
    per_model = Budget.objects.get(team__name="search", model__name="gpt-4o")
    assert (per_model.limit_usd, per_model.period) == (Decimal("500"), "monthly")
    assert Budget.objects.get(key__name="assistant-prod").limit_usd == Decimal("5")
    assert EndUserPolicy.objects.filter(organization__name="acme").count() == 2
    assert key.end_user_policies is not None


def check_routing() -> None:
    mini = Model.objects.get(name="gpt-4o-mini")
    assert mini.routing_strategy == "weighted"
    assert [f.fallback.name for f in mini.fallbacks.all()] == ["local-llama"]
    assert Model.objects.get(name="local-llama").routing_strategy == "priority"
    assert mini.deployments.filter(role="fallback").count() == 1
    assert compiled_key("contracts-prod").required_tags == (("region", frozenset({"eu"})),)


def check_guardrails() -> None:
    custom = GuardrailRule.objects.get(team__name="support", name="internal-codenames")
    assert custom.settings["keywords"] == ["project-falcon", "project-osprey"]
    phone = GuardrailRule.objects.get(team__name="support", detector="phone")
    assert (phone.mode, phone.settings["regions"]) == ("shadow", ["GB", "IE"])
    assert GuardrailRule.objects.filter(organization__name="acme").count() == 5
    key = compiled_key("helpdesk-bot")
    assert key.capture_mode == "none"  # the project's rule beats the organisation's
    assert key.guardrails is not None


def check_mcp() -> None:
    tickets = McpServer.objects.get(name="tickets")
    assert tickets.tools.get(name="create_ticket").requires_approval
    assert McpServer.objects.get(name="files").command == "npx"
    deny = ToolGrant.objects.get(team__name="support", tool="delete_ticket")
    assert deny.effect == "deny"


def check_model_aliases() -> None:
    aliases = compiled_key("intern-laptop").aliases
    assert aliases is not None
    assert aliases.target("gpt-4o") == "company-small"  # the team's pattern wins
    assert aliases.target("claude-haiku-4-5") == "company-small"
    assert aliases.target("claude-sonnet-4-5") == "company-large"


def check_sso() -> None:
    provider = OidcProvider.objects.get(organization__name="acme")
    assert provider.issuer == "https://login.acme.example"
    assert provider.client_secret == SECRETS["ACME_OIDC_SECRET"]
    web = GroupMapping.objects.get(provider=provider, group="web-devs")
    assert (web.role, web.project.name) == ("member", "web")
    assert GroupMapping.objects.filter(provider=provider).count() == 5


CHECKS: dict[str, Callable[[], None]] = {
    "hierarchy.yaml": check_hierarchy,
    "budgets-limits.yaml": check_budgets_limits,
    "routing.yaml": check_routing,
    "guardrails.yaml": check_guardrails,
    "mcp.yaml": check_mcp,
    "model-aliases.yaml": check_model_aliases,
    "sso.yaml": check_sso,
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_applies_has_its_effect_and_reapplies_as_a_no_op(name: str) -> None:
    apply(name)
    CHECKS[name]()
    assert "no changes: created 0, updated 0, deleted 0" in apply(name)


def test_every_example_is_tested_and_linked_from_the_docs() -> None:
    files = {path.name for path in EXAMPLES.glob("*.yaml")}
    assert files == set(CHECKS)
    guide = (DOCS / "config.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(examples/([^)]+)\)", guide))
    assert linked == files
