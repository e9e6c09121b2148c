"""People and end users as governance levels, on the policy side: which rule types take a
person, the end-user policy's rules, the compiled snapshot, the effective policy and
``odock_apply``."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from apps.audit.models import ContentCapture
from apps.gateway.governance import end_user_rules
from apps.keys.models import VirtualKey
from apps.policies.compile import snapshot_compile
from apps.policies.models import (
    Budget,
    DeploymentTagRule,
    EndUserPolicy,
    ModelAccess,
    ModelAlias,
    RateLimit,
)
from apps.policies.selectors import effective_policy_for_key
from tests.factories import key_create, model_create, project_create, team_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="x")


@pytest.fixture
def model():
    from apps.providers.models import Provider

    provider = Provider.objects.create(name="p", kind="openai", api_base="http://127.0.0.1:9")
    return model_create("m", provider)


# --- models -------------------------------------------------------------------------------


def test_budgets_rate_limits_and_model_access_take_a_person_as_their_one_level(alice, model):
    Budget(user=alice, limit_usd=Decimal("5")).full_clean()
    RateLimit(user=alice, rpm=10).full_clean()
    ModelAccess(user=alice, model=model).full_clean()
    assert Budget(user=alice, limit_usd=Decimal("5")).level == "user:alice"
    issued = key_create()
    with pytest.raises(ValidationError, match="exactly one level"):
        Budget(user=alice, key=issued.key, limit_usd=Decimal("5")).full_clean()
    with pytest.raises(ValidationError, match="exactly one level"):
        RateLimit(rpm=10).full_clean()
    # The database refuses it too, whatever door the row comes through.
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(user=alice, key=issued.key, limit_usd=Decimal("5"))


def test_routing_aliases_and_capture_have_no_person_level(alice):
    """Where traffic is routed, what names it may use and what is captured follow where
    it comes from: those rule types have no ``user`` column at all."""
    for rule_model in (DeploymentTagRule, ModelAlias, ContentCapture):
        assert "user" not in {f.name for f in rule_model._meta.get_fields()}
        with pytest.raises(TypeError):
            rule_model(user=alice)


def test_an_end_user_policy_needs_a_limit_and_a_valid_id_or_pattern(transactional_db):
    org = team_create().organization
    with pytest.raises(ValidationError, match="budget or at least one rate limit"):
        EndUserPolicy(organization=org, end_user="a").full_clean()
    for bad in ("", "has space", "two**", "*trial", "-x", "x" * 129):
        with pytest.raises(ValidationError):
            EndUserPolicy(organization=org, end_user=bad, rpm=1).full_clean()
    for good in ("*", "trial-*", "user@example.com", "org/123:abc"):
        EndUserPolicy(organization=org, end_user=good, rpm=1).full_clean()
    EndUserPolicy.objects.create(organization=org, end_user="vip", rpm=1)
    with pytest.raises(ValidationError, match="already has a policy"):
        EndUserPolicy(organization=org, end_user="vip", rpm=2).full_clean()


# --- the snapshot -------------------------------------------------------------------------


def test_the_snapshot_gives_a_persons_rules_to_every_key_they_own_and_no_other(alice, model):
    mine = key_create(owner=alice)
    also_mine = key_create(project=project_create(), owner=alice)  # another organisation
    not_mine = key_create(project=mine.key.project)
    budget = Budget.objects.create(user=alice, limit_usd=Decimal("2"), alert_thresholds=[50])
    limit = RateLimit.objects.create(user=alice, rpm=7)
    ModelAccess.objects.create(user=alice, model=model)

    keys = snapshot_compile().keys_by_digest
    entry_of = {e.identity.key_id: e for e in keys.values()}
    for issued in (mine, also_mine):
        entry = entry_of[issued.key.pk]
        by_level = {(r.kind, r.level): r for r in entry.limits}
        assert by_level[("budget", "user:alice")].rule_id == budget.pk
        assert by_level[("rpm", "user:alice")].rule_id == limit.pk
        assert entry.allowed_models == frozenset({"m"})
    # One counter for both keys: the rule's, not the key's.
    counters = [{r.key for r in entry_of[k.key.pk].limits} for k in (mine, also_mine)]
    assert counters[0] == counters[1] and len(counters[0]) == 2
    other = entry_of[not_mine.key.pk]
    assert other.limits == () and other.allowed_models is None
    # A person's budget sends no threshold alert (no organisation to send it to).
    assert by_level[("budget", "user:alice")].thresholds == ()


def test_the_snapshot_holds_each_organisations_end_user_policies(transactional_db):
    issued = key_create()
    org = issued.key.project.team.organization
    other = key_create()
    star = EndUserPolicy.objects.create(organization=org, end_user="*", rpm=5)
    trial = EndUserPolicy.objects.create(
        organization=org, end_user="trial-*", limit_usd=Decimal("1"), period="daily", tpm=100
    )
    longer = EndUserPolicy.objects.create(organization=org, end_user="trial-eu-*", rpm=1)
    vip = EndUserPolicy.objects.create(organization=org, end_user="vip", max_concurrency=2)

    keys = {e.identity.key_id: e for e in snapshot_compile().keys_by_digest.values()}
    policies = keys[issued.key.pk].end_user_policies
    assert keys[other.key.pk].end_user_policies is None
    assert policies.policy_for("vip").policy_id == vip.pk
    assert policies.policy_for("trial-7").policy_id == trial.pk
    assert policies.policy_for("trial-eu-7").policy_id == longer.pk
    assert policies.policy_for("someone").policy_id == star.pk

    rules = end_user_rules(policies.policy_for("trial-7"), "trial-7", "m")
    assert {(r.kind, r.level) for r in rules} == {
        ("budget", "end_user:trial-7"),
        ("tpm", "end_user:trial-7"),
    }
    # Each end user counts on their own counters.
    other_rules = end_user_rules(policies.policy_for("trial-8"), "trial-8", "m")
    assert not {r.key for r in rules} & {r.key for r in other_rules}


# --- the effective policy -----------------------------------------------------------------


def test_the_effective_policy_lists_the_owners_rules_as_a_level(alice, model):
    issued = key_create(owner=alice)
    Budget.objects.create(user=alice, limit_usd=Decimal("3"), period="daily")
    Budget.objects.create(key=issued.key, limit_usd=Decimal("10"), period="daily")
    RateLimit.objects.create(user=alice, rpm=9)
    ModelAccess.objects.create(user=alice, model=model)
    DeploymentTagRule.objects.create(key=issued.key, tag="region", allowed_values=["eu"])

    policy = effective_policy_for_key(VirtualKey.objects.get(pk=issued.key.pk))

    assert policy["levels"][-1] == "user:alice"
    assert policy["models"]["by_level"] == {"user:alice": ["m"]}
    assert policy["models"]["effective"] == ["m"]
    assert [(r["level"], r["limit"]) for r in policy["rate_limits"]] == [("user:alice", 9)]
    budgets = {b["level"]: b for b in policy["budgets"]}
    assert budgets["user:alice"]["binding"]  # the tighter of the two
    assert not budgets[f"key:{issued.key.name}"]["binding"]
    # Without an owner there is no person level.
    plain = key_create()
    assert "user:" not in " ".join(effective_policy_for_key(plain.key)["levels"])


# --- odock_apply --------------------------------------------------------------------------


def _apply(tmp_path, text: str) -> str:
    path = tmp_path / "odock.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("odock_apply", str(path), stdout=out)
    return out.getvalue()


FILE = """
models:
  - {name: m, price: {input_per_mtok: "1", output_per_mtok: "1"}}
organizations:
  - name: acme
    end_users:
      - {end_user: "trial-*", budget: {limit_usd: "1", period: daily}, rate_limit: {rpm: 10}}
      - {end_user: vip, rate_limit: {tpm: 100000}}
    teams:
      - name: search
        projects:
          - name: assistant
            keys:
              - {name: alices, owner: alice, secret: "sk-odock-test-alice-0000000000000"}
users:
  - username: alice
    budget: {limit_usd: "20", period: monthly}
    rate_limit: {rpm: 60}
    models: [m]
"""


def test_odock_apply_sets_a_persons_rules_key_owners_and_end_user_policies(tmp_path, alice):
    _apply(tmp_path, FILE)

    key = VirtualKey.objects.get(name="alices")
    assert key.owner == alice
    budget = Budget.objects.get(user=alice)
    assert (budget.limit_usd, budget.period) == (Decimal("20"), "monthly")
    assert RateLimit.objects.get(user=alice).rpm == 60
    assert list(ModelAccess.objects.filter(user=alice).values_list("model__name", flat=True)) == [
        "m"
    ]
    policies = {p.end_user: p for p in EndUserPolicy.objects.filter(organization__name="acme")}
    assert set(policies) == {"trial-*", "vip"}
    assert policies["trial-*"].limit_usd == Decimal("1") and policies["trial-*"].rpm == 10
    assert policies["vip"].limit_usd is None and policies["vip"].tpm == 100000

    assert "no changes" in _apply(tmp_path, FILE)  # idempotent

    # The lists replace: a policy and a person's rate limit left out are removed.
    smaller = FILE.replace("      - {end_user: vip, rate_limit: {tpm: 100000}}\n", "").replace(
        "    rate_limit: {rpm: 60}\n", ""
    )
    _apply(tmp_path, smaller)
    assert set(EndUserPolicy.objects.values_list("end_user", flat=True)) == {"trial-*"}
    assert not RateLimit.objects.filter(user=alice).exists()
    assert Budget.objects.filter(user=alice).exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("username: alice", "username: nobody"), "users[0].username: unknown user 'nobody'"),
        (("owner: alice", "owner: ghost"), ".keys[0].owner: unknown user 'ghost'"),
        (("models: [m]", "models: [nope]"), "users[0].models[0]: unknown model 'nope'"),
        (("end_user: vip", 'end_user: "trial-*"'), "end_users[1]: duplicate end-user policy"),
        (("end_user: vip", 'end_user: "bad id"'), "end_users[1].end_user"),
        (("{end_user: vip, rate_limit: {tpm: 100000}}", "{end_user: vip}"), "end_users[1]"),
        (("    models: [m]\n", "    models: [m]\n    guardrails: []\n"), "users[0].guardrails"),
    ],
)
def test_odock_apply_refuses_bad_people_and_end_users_and_changes_nothing(
    tmp_path, alice, change, expected
):
    with pytest.raises(CommandError) as err:
        _apply(tmp_path, FILE.replace(*change))
    assert expected in str(err.value)
    assert not Budget.objects.exists() and not EndUserPolicy.objects.exists()
    assert not VirtualKey.objects.exists()


# --- admin --------------------------------------------------------------------------------


def test_the_admin_attaches_a_budget_to_a_person_and_keeps_the_person_off_level_inlines(
    admin_client, alice
):
    response = admin_client.post(
        "/admin/policies/budget/add/",
        {
            "user": alice.pk,
            "limit_usd": "7",
            "period": "daily",
            "hard": "on",
            "alert_thresholds": "[]",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Budget.objects.get(user=alice).level == "user:alice"
    listing = admin_client.get("/admin/policies/budget/?level=user")
    assert "user:alice" in listing.content.decode()
    # Two levels at once is refused with the model's message, and nothing is saved.
    issued = key_create()
    refused = admin_client.post(
        "/admin/policies/ratelimit/add/", {"user": alice.pk, "key": issued.key.pk, "rpm": "5"}
    )
    assert refused.status_code == 200 and "exactly one level" in refused.content.decode()
    assert not RateLimit.objects.exists()
    # An organisation's page lists its rules inline without a person field to pick.
    org = issued.key.project.team.organization
    page = admin_client.get(f"/admin/tenancy/organization/{org.pk}/change/").content.decode()
    assert 'name="budget-0-user"' not in page and 'name="budget-__prefix__-user"' not in page
    assert 'name="budget-__prefix__-limit_usd"' in page


def test_the_admin_lists_and_adds_end_user_policies(admin_client):
    org = team_create().organization
    response = admin_client.post(
        "/admin/policies/enduserpolicy/add/",
        {
            "organization": org.pk,
            "end_user": "trial-*",
            "period": "monthly",
            "hard": "on",
            "rpm": "3",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    refused = admin_client.post(
        "/admin/policies/enduserpolicy/add/",
        {"organization": org.pk, "end_user": "nolimit", "period": "monthly"},
    )
    assert "Set a budget or at least one rate limit" in refused.content.decode()
    listing = admin_client.get("/admin/policies/enduserpolicy/").content.decode()
    assert "trial-*" in listing and "nolimit" not in listing


def test_end_user_policy_and_person_rule_changes_reload_the_gateways(alice, transactional_db):
    from apps.core.models import config_version_current

    org = team_create().organization
    before = config_version_current()
    policy = EndUserPolicy.objects.create(organization=org, end_user="*", rpm=1)
    assert config_version_current() > before
    before = config_version_current()
    policy.delete()
    assert config_version_current() > before
    before = config_version_current()
    Budget.objects.create(user=alice, limit_usd=Decimal("1"))
    assert config_version_current() > before


def test_reconciliation_sets_each_end_users_budget_counter_from_the_log(
    transactional_db, redis_url
):
    """The five-minute job: an end user's counter is set to what the request log holds,
    both ways, for the policy that governs that end user (the most specific one)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    import redis

    from apps.audit.models import RequestLog
    from apps.gateway.governance import usd_to_pico
    from apps.policies.rollup import spend_reconcile

    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    issued = key_create()
    org = issued.key.project.team.organization
    trial = EndUserPolicy.objects.create(
        organization=org, end_user="trial-*", limit_usd=Decimal("5"), period="daily"
    )
    vip = EndUserPolicy.objects.create(organization=org, end_user="trial-vip", rpm=5)
    other_org_key = key_create()
    spent = {"trial-1": Decimal("0.25"), "trial-2": Decimal("0.5"), "trial-vip": Decimal("1")}
    for end_user, cost in [*spent.items(), ("trial-1", Decimal("0.125"))]:
        for key in (issued.key, other_org_key.key):  # the other organisation's don't count
            RequestLog.objects.create(
                request_id=uuid.uuid4().hex,
                created_at=now - timedelta(hours=1),
                organization_id=key.project.team.organization_id,
                key_id=key.pk,
                end_user=end_user,
                endpoint="chat.completions",
                status_code=200,
                cost_usd=cost,
            )
    spent["trial-1"] += Decimal("0.125")
    client = redis.Redis.from_url(redis_url)
    stem = f"{{odock}}:v2:b:eu{trial.pk}:"
    client.set(f"{stem}trial-1:d20261124:s", usd_to_pico(Decimal("9")))  # too high
    try:
        spend_reconcile(redis_client=client, now=now)
        for end_user in ("trial-1", "trial-2"):
            assert int(client.get(f"{stem}{end_user}:d20261124:s")) == usd_to_pico(spent[end_user])
        # trial-vip has a policy of its own (no budget): no trial-* counter for it.
        assert client.get(f"{stem}trial-vip:d20261124:s") is None
        assert not list(client.scan_iter(f"{{odock}}:v2:b:eu{vip.pk}:*"))
    finally:
        client.flushdb()
        client.close()
