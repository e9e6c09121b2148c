"""odock_apply: the ARCHITECTURE example applies, re-applies as a no-op, and bad files
change nothing while naming the bad field's path."""

from __future__ import annotations

import re
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.core.models import config_version_current
from apps.keys.models import VirtualKey
from apps.keys.services import key_secret_matches
from apps.policies.config import ConfigError, config_load
from apps.policies.models import Budget, ModelAccess, RateLimit
from apps.providers.models import Deployment, Model, Provider
from apps.tenancy.models import Organization, Project, Team
from tests.factories import key_create

EXAMPLE = Path(__file__).parent / "fixtures" / "architecture.yaml"
EXAMPLE_KEY_SECRET = "sk-odock-test-assistant"
TABLES = (
    Provider,
    Model,
    Deployment,
    Organization,
    Team,
    Project,
    VirtualKey,
    Budget,
    RateLimit,
    ModelAccess,
)
GENERATED = re.compile(r"^key (\S+): (sk-odock-\S+)$", re.MULTILINE)


def apply_file(path: Path) -> str:
    out = StringIO()
    call_command("odock_apply", str(path), stdout=out)
    return out.getvalue()


@pytest.fixture
def apply_text(tmp_path):
    def apply(text: str) -> str:
        path = tmp_path / "odock.yaml"
        path.write_text(text)
        return apply_file(path)

    return apply


def table_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in TABLES}


def raw_api_key(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM providers_provider WHERE name = %s", [name])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_architecture_example_applies():
    out = apply_file(EXAMPLE)

    openai = Provider.objects.get(name="openai-main")
    assert (openai.kind, openai.api_base) == ("openai", "http://127.0.0.1:9001/v1")
    assert openai.api_key == "sk-upstream"
    assert "sk-upstream" not in raw_api_key("openai-main")  # encrypted at rest
    assert Provider.objects.get(name="claude-main").kind == "anthropic"

    model = Model.objects.get(name="gpt-4o-mini")
    assert isinstance(model.input_per_mtok, Decimal)
    assert (model.input_per_mtok, model.output_per_mtok) == (Decimal("0.15"), Decimal("0.60"))
    assert {
        (d.provider.name, d.upstream_model, d.role, d.weight) for d in model.deployments.all()
    } == {
        ("openai-main", "gpt-4o-mini", "primary", 1),
        ("claude-main", "claude-3-5-haiku-latest", "fallback", 1),
    }

    acme = Organization.objects.get(name="acme")
    org_budget = Budget.objects.get(organization=acme)
    assert (org_budget.limit_usd, org_budget.period, org_budget.hard) == (
        Decimal("1000"),
        "monthly",
        True,
    )
    team = Team.objects.get(organization=acme, name="search")
    limit = RateLimit.objects.get(team=team)
    assert (limit.rpm, limit.tpm, limit.max_concurrency, limit.model) == (600, 200000, None, None)
    assert [a.model.name for a in ModelAccess.objects.filter(team=team)] == ["gpt-4o-mini"]

    key = VirtualKey.objects.get(
        project__team=team, project__name="assistant", name="assistant-prod"
    )
    assert key.digest != EXAMPLE_KEY_SECRET and EXAMPLE_KEY_SECRET not in key.digest
    assert key_secret_matches(key=key, secret=EXAMPLE_KEY_SECRET)
    key_budget = Budget.objects.get(key=key)
    assert (key_budget.limit_usd, key_budget.period) == (Decimal("5"), "daily")

    assert "created MCP server tickets" in out and "warning" not in out
    assert "created 14, updated 0, deleted 0" in out
    assert EXAMPLE_KEY_SECRET not in out and "sk-upstream" not in out


@pytest.mark.django_db
def test_second_apply_changes_nothing(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as first:
        apply_file(EXAMPLE)
    assert first, "the first apply must bump the config version"
    version = config_version_current()
    pks = {model.__name__: set(model.objects.values_list("pk", flat=True)) for model in TABLES}

    with django_capture_on_commit_callbacks(execute=True) as second:
        out = apply_file(EXAMPLE)

    assert second == []
    assert config_version_current() == version
    assert "no changes: created 0, updated 0, deleted 0, unchanged 14" in out
    assert {m.__name__: set(m.objects.values_list("pk", flat=True)) for m in TABLES} == pks


SCHEMA_ERRORS = """
providers:
  - {name: p1, kind: openia, api_base: "http://127.0.0.1:9001/v1"}
models:
  - name: gpt-4o-mini
    price: {input_per_mtok: "-1", output_per_mtok: 0.5}
    deployments: [{provider: p1, model: m1, wieght: 2}]
organizations:
  - name: acme
    budget: {limit_usd: "10", period: yearly}
    teams:
      - name: a
      - name: b
        rate_limit: {rpm: many}
"""

SEMANTIC_ERRORS = """
providers:
  - {name: p1, kind: openai, api_base: "not a url"}
  - {name: p1, kind: openai, api_base: "http://127.0.0.1:9001/v1"}
models:
  - name: gpt-4o-mini
    price: {input_per_mtok: "0.1", output_per_mtok: "0.2"}
    deployments: [{provider: nope, model: m1}]
organizations:
  - name: acme
    budget: {limit_usd: "2000", period: monthly}
    teams:
      - {name: a, models: [gpt-4o-mini, unknown-model]}
      - {name: a}
      - {name: b, budgets: [{limit_usd: "1", period: daily}, {limit_usd: "2", period: daily}]}
  - name: late
    teams:
      - name: t
        projects:
          - name: p
            keys: [{name: k, secret: "short"}, {name: k2, budget: {limit_usd: "1", model: nah}}]
"""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            SCHEMA_ERRORS,
            [
                "providers[0].kind: Input should be 'openai', 'openai_compatible'",
                "models[0].price.input_per_mtok: Input should be greater than or equal to 0",
                "models[0].deployments[0].wieght: Extra inputs are not permitted",
                "organizations[0].budget.period: Input should be 'daily', 'weekly', 'monthly' or",
                "organizations[0].teams[1].rate_limit.rpm: Input should be a valid integer",
            ],
        ),
        (
            SEMANTIC_ERRORS,
            [
                "providers[0].api_base: Enter a valid http(s) URL",
                "providers[1]: duplicate provider 'p1'",
                "models[0].deployments[0].provider: unknown provider 'nope'",
                "organizations[0].teams[0].models[1]: unknown model 'unknown-model'",
                "organizations[0].teams[1]: duplicate team 'a'",
                "organizations[0].teams[2].budgets[1]: duplicate budget (model, period)",
                "organizations[1].teams[0].projects[0].keys[0].secret: a key secret must start",
                "organizations[1].teams[0].projects[0].keys[1].budget.model: unknown model 'nah'",
            ],
        ),
    ],
    ids=["schema", "semantic"],
)
def test_bad_file_names_paths_and_changes_nothing(apply_text, text, expected):
    apply_file(EXAMPLE)
    before = table_counts()
    org_budget = Budget.objects.get(organization__name="acme").limit_usd

    with pytest.raises(CommandError) as excinfo:
        apply_text(text)

    message = str(excinfo.value)
    assert "nothing changed" in message
    for line in expected:
        assert line in message
    assert table_counts() == before
    assert Budget.objects.get(organization__name="acme").limit_usd == org_budget
    assert not Organization.objects.filter(name="late").exists()


@pytest.mark.django_db
def test_error_found_while_applying_rolls_everything_back(apply_text):
    """The secret clash is only found when the last org's key is written: by then the first
    org, its team, project and rules were saved, and must be rolled back."""
    apply_file(EXAMPLE)
    taken = key_create(secret="sk-odock-already-taken-123").secret
    before = table_counts()

    text = f"""
organizations:
  - name: early
    budget: {{limit_usd: "1"}}
    teams: [{{name: t, projects: [{{name: p, keys: [{{name: k}}]}}]}}]
  - name: acme
    teams:
      - name: search
        projects:
          - name: assistant
            keys: [{{name: new-key, secret: "{taken}"}}]
"""
    with pytest.raises(CommandError) as excinfo:
        apply_text(text)

    assert (
        "organizations[1].teams[0].projects[0].keys[0].secret: "
        "this secret is already used by another key"
    ) in str(excinfo.value)
    assert taken not in str(excinfo.value)
    assert table_counts() == before
    assert not Organization.objects.filter(name="early").exists()
    # The acme org's budget was not in this file: it would have been deleted before the error.
    assert Budget.objects.filter(organization__name="acme").exists()


GENERATED_KEY = """
organizations:
  - name: gen
    teams: [{name: t, projects: [{name: p, keys: [{name: k}]}]}]
"""


@pytest.mark.django_db
def test_generated_key_is_printed_once(apply_text):
    first = apply_text(GENERATED_KEY)

    [(path, secret)] = GENERATED.findall(first)
    assert path == "gen/t/p/k"
    key = VirtualKey.objects.get(name="k")
    assert key.digest != secret
    assert key_secret_matches(key=key, secret=secret)

    second = apply_text(GENERATED_KEY)
    assert "sk-odock-" not in second
    assert "no changes" in second
    key.refresh_from_db()
    assert key_secret_matches(key=key, secret=secret)


RULES_BEFORE = """
models:
  - {name: m1, price: {input_per_mtok: "1", output_per_mtok: "2"}}
  - {name: m2, price: {input_per_mtok: "1", output_per_mtok: "2"}}
organizations:
  - name: acme
    teams:
      - name: search
        rate_limit: {rpm: 600, tpm: 200000}
        budgets:
          - {limit_usd: "10", period: daily}
          - {limit_usd: "100", period: monthly, model: m1}
        models: [m1, m2]
"""

RULES_AFTER = """
models:
  - {name: m1, price: {input_per_mtok: "1", output_per_mtok: "2.5"}}
  - {name: m2, price: {input_per_mtok: "1", output_per_mtok: "2"}}
organizations:
  - name: acme
    teams:
      - name: search
        rate_limit: {rpm: 100, tpm: 200000}
        budgets:
          - {limit_usd: "10", period: daily}
        models: [m2]
"""


@pytest.mark.django_db
def test_changed_limits_update_and_removed_rules_are_removed(apply_text):
    apply_text(RULES_BEFORE)
    team = Team.objects.get(name="search")
    limit_pk = RateLimit.objects.get(team=team).pk
    daily_pk = Budget.objects.get(team=team, period="daily").pk

    out = apply_text(RULES_AFTER)

    limit = RateLimit.objects.get(team=team)
    assert (limit.pk, limit.rpm, limit.tpm) == (limit_pk, 100, 200000)
    assert [b.pk for b in Budget.objects.filter(team=team)] == [daily_pk]
    assert [a.model.name for a in ModelAccess.objects.filter(team=team)] == ["m2"]
    assert Model.objects.get(name="m1").output_per_mtok == Decimal("2.5")
    assert "updated rate limit on team acme/search (all models) (rpm)" in out
    assert "updated model m1 (output_per_mtok)" in out
    assert "deleted budget on team acme/search" in out
    assert "deleted model access rule on team acme/search" in out
    assert "created 0, updated 2, deleted 2, unchanged " in out

    # A level listed with no rules at all loses them all; unlisted levels keep theirs.
    apply_text("organizations: [{name: acme, teams: [{name: search}]}]")
    assert not RateLimit.objects.filter(team=team).exists()
    assert not Budget.objects.filter(team=team).exists()
    assert not ModelAccess.objects.filter(team=team).exists()


@pytest.mark.django_db
def test_key_secret_expiry_and_revocation(apply_text):
    base = "organizations: [{name: o, teams: [{name: t, projects: [{name: p, keys: [KEY]}]}]}]"
    apply_text(base.replace("KEY", '{name: k, secret: "sk-odock-first-secret-1"}'))
    key = VirtualKey.objects.get(name="k")

    out = apply_text(
        base.replace(
            "KEY",
            '{name: k, secret: "sk-odock-second-secret-2", expires_at: "2030-01-01T00:00:00Z"}',
        )
    )
    key.refresh_from_db()
    assert key_secret_matches(key=key, secret="sk-odock-second-secret-2")
    assert not key_secret_matches(key=key, secret="sk-odock-first-secret-1")
    assert key.expires_at.isoformat() == "2030-01-01T00:00:00+00:00"
    assert "updated key o/t/p/k (secret, expires_at)" in out
    assert "sk-odock-second" not in out

    apply_text(base.replace("KEY", "{name: k, revoked: true}"))
    key.refresh_from_db()
    assert key.is_revoked
    assert key.expires_at is not None  # left out: kept

    with pytest.raises(CommandError, match=r"keys\[0\]\.revoked: the key is revoked"):
        apply_text(base.replace("KEY", "{name: k, revoked: false}"))
    with pytest.raises(CommandError, match=r"keys\[0\]\.expires_at: Input should have timezone"):
        apply_text(base.replace("KEY", '{name: k, expires_at: "2030-01-01T00:00:00"}'))


@pytest.mark.django_db
def test_provider_api_key_from_environment(apply_text, monkeypatch):
    text = (
        'providers: [{name: p, kind: openai, api_base: "http://127.0.0.1:9/v1", '
        "api_key_env: ODOCK_TEST_UPSTREAM_KEY}]"
    )
    monkeypatch.delenv("ODOCK_TEST_UPSTREAM_KEY", raising=False)
    with pytest.raises(CommandError, match=r"providers\[0\]\.api_key_env: .* is not set"):
        apply_text(text)

    monkeypatch.setenv("ODOCK_TEST_UPSTREAM_KEY", "sk-from-env-123")
    out = apply_text(text)
    assert Provider.objects.get(name="p").api_key == "sk-from-env-123"
    assert "sk-from-env-123" not in raw_api_key("p")
    assert "sk-from-env-123" not in out

    # A provider listed without any api_key keeps the stored one.
    apply_text('providers: [{name: p, kind: openai, api_base: "http://127.0.0.1:9/v1"}]')
    assert Provider.objects.get(name="p").api_key == "sk-from-env-123"


@pytest.mark.django_db
def test_free_form_options_and_tags_are_stored_as_json(apply_text):
    apply_text(
        """
providers:
  - name: azure-eu
    kind: azure
    api_base: "https://example.openai.azure.com"
    options: {api_version: "2024-06-01", temperature: 0.5, retries: 2.0, since: 2024-01-01}
models:
  - name: m
    price: {input_per_mtok: 1, output_per_mtok: 2}
    deployments: [{provider: azure-eu, model: gpt-4o, weight: 3, tags: {region: eu, tier: 1.5}}]
"""
    )
    assert Provider.objects.get(name="azure-eu").options == {
        "api_version": "2024-06-01",
        "temperature": 0.5,
        "retries": 2,
        "since": "2024-01-01",
    }
    deployment = Deployment.objects.get(model__name="m")
    assert (deployment.weight, deployment.tags) == (3, {"region": "eu", "tier": 1.5})


def test_config_load_reports_the_field_path():
    text = "organizations: [{name: a, teams: [{name: x}, {name: y, rate_limit: {rpm: abc}}]}]"
    with pytest.raises(ConfigError) as excinfo:
        config_load(text)
    [line] = excinfo.value.errors
    assert line.startswith(
        "organizations[0].teams[1].rate_limit.rpm: Input should be a valid integer"
    )


def test_config_load_reads_yaml_numbers_as_decimal_and_refuses_duplicate_keys():
    config = config_load("models: [{name: m, price: {input_per_mtok: 0.1, output_per_mtok: 3}}]")
    price = config.models[0].price
    assert price.input_per_mtok == Decimal("0.1") and isinstance(price.input_per_mtok, Decimal)

    with pytest.raises(ConfigError, match=r"line 3, column 3: duplicate key 'name'"):
        config_load("organizations:\n- name: a\n  name: b\n")
    with pytest.raises(ConfigError, match=r"^line 1"):
        config_load("organizations: [")


ALERTS = """
organizations:
  - name: acme
    outage_policy: fail_open
    alerts:
      webhook_url: "https://hooks.example.com/odock"
      webhook_secret: "whsec-from-file-31"
      emails: [ops@acme.io, finance@acme.io]
"""


def raw_webhook_secret(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT alert_webhook_secret FROM tenancy_organization WHERE name = %s", [name]
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_outage_policy_and_alerts_apply_idempotently_without_printing_the_secret(
    apply_text, monkeypatch
):
    out = apply_text(ALERTS)

    acme = Organization.objects.get(name="acme")
    assert acme.outage_policy == "fail_open"
    assert acme.alert_webhook_url == "https://hooks.example.com/odock"
    assert acme.alert_webhook_secret == "whsec-from-file-31"
    assert "whsec-from-file-31" not in raw_webhook_secret("acme")  # encrypted at rest
    assert acme.alert_emails == "ops@acme.io, finance@acme.io"
    assert "whsec-from-file-31" not in out
    assert "no changes" in apply_text(ALERTS)

    # The secret from the environment replaces it; only the field's name is reported.
    monkeypatch.setenv("ODOCK_TEST_WEBHOOK_SECRET", "whsec-from-env-58")
    out = apply_text(
        ALERTS.replace(
            'webhook_secret: "whsec-from-file-31"', "webhook_secret_env: ODOCK_TEST_WEBHOOK_SECRET"
        )
    )
    assert "updated organization acme (alert_webhook_secret)" in out
    assert "whsec-from-env-58" not in out
    acme.refresh_from_db()
    assert acme.alert_webhook_secret == "whsec-from-env-58"

    # Left out keeps; an empty value clears just that setting.
    assert "no changes" in apply_text("organizations: [{name: acme}]")
    out = apply_text("organizations: [{name: acme, alerts: {emails: []}}]")
    assert "updated organization acme (alert_emails)" in out
    acme.refresh_from_db()
    assert (acme.outage_policy, acme.alert_emails) == ("fail_open", "")
    assert acme.alert_webhook_url == "https://hooks.example.com/odock"
    assert acme.alert_webhook_secret == "whsec-from-env-58"


@pytest.mark.django_db
def test_the_same_emails_written_differently_by_hand_are_not_a_change(apply_text):
    apply_text(ALERTS)
    Organization.objects.filter(name="acme").update(alert_emails="ops@acme.io,finance@acme.io")
    assert "no changes" in apply_text(ALERTS)


BAD_ALERTS = """
organizations:
  - name: acme
    outage_policy: fail_sometimes
    alerts:
      webhook_url: "not a url"
      emails: [ops@acme.io, "finance at acme"]
      sms: true
  - name: other
    alerts:
      webhook_secret: "whsec-never-shown-12"
      webhook_secret_env: ODOCK_TEST_WEBHOOK_SECRET
"""

SEMANTIC_BAD_ALERTS = """
organizations:
  - name: acme
    outage_policy: fail_closed
    alerts:
      webhook_url: ""
      webhook_secret_env: ODOCK_TEST_UNSET_SECRET
      emails: [ops@acme.io, ops@acme.io]
"""


@pytest.mark.django_db
def test_bad_outage_policy_and_alerts_name_paths_and_change_nothing(apply_text, monkeypatch):
    monkeypatch.delenv("ODOCK_TEST_UNSET_SECRET", raising=False)
    apply_text(ALERTS)
    before = Organization.objects.values().get(name="acme")

    with pytest.raises(CommandError) as excinfo:
        apply_text(BAD_ALERTS)

    message = str(excinfo.value)
    for line in (
        "organizations[0].outage_policy: Input should be 'fail_closed' or 'fail_open'",
        "organizations[0].alerts.webhook_url: Enter a valid http(s) URL",
        "organizations[0].alerts.emails[1]: Enter a valid email address.",
        "organizations[0].alerts.sms: Extra inputs are not permitted",
        "organizations[1].alerts: give webhook_secret or webhook_secret_env, not both",
    ):
        assert line in message
    assert "whsec-never-shown-12" not in message
    assert Organization.objects.values().get(name="acme") == before
    assert not Organization.objects.filter(name="other").exists()

    # Past the schema, meaning is checked: the environment and repeated addresses.
    with pytest.raises(CommandError) as excinfo:
        apply_text(SEMANTIC_BAD_ALERTS)

    message = str(excinfo.value)
    for line in (
        "organizations[0].alerts.webhook_secret_env: ODOCK_TEST_UNSET_SECRET is not set",
        "organizations[0].alerts.emails[1]: duplicate address 'ops@acme.io'",
    ):
        assert line in message
    assert Organization.objects.values().get(name="acme") == before
