"""odock_apply: per-model routing, fallback models, deployment priority and data-residency
tag rules apply, re-apply as a no-op, and compile into the gateway snapshot."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from apps.policies.compile import snapshot_compile
from apps.policies.models import DeploymentTagRule
from apps.providers.models import Deployment, Model, ModelFallback
from tests.factories import odock_apply_text

pytestmark = pytest.mark.django_db

FILE = """
providers:
  - {name: eu-openai, kind: openai, api_base: "http://eu.example:1/v1"}
  - {name: us-openai, kind: openai, api_base: "http://us.example:1/v1"}
models:
  - name: big
    price: {input_per_mtok: "5", output_per_mtok: "15"}
    deployments:
      - {provider: eu-openai, model: big-eu, priority: 1, tags: {region: eu}}
      - {provider: us-openai, model: big-us, priority: 0, tags: {region: us}}
  - name: small
    price: {input_per_mtok: "1", output_per_mtok: "2"}
    routing:
      strategy: priority
      max_attempts: 4
      attempt_timeout_seconds: 12.5
      fallback_models: [big, mid]
      fallback_on: [error, content_policy]
    deployments:
      - {provider: eu-openai, model: small-eu, tags: {region: eu}}
  - name: mid
    price: {input_per_mtok: "2", output_per_mtok: "30"}
    deployments:
      - {provider: us-openai, model: mid-us}
organizations:
  - name: acme
    deployment_tags: {region: [eu, us]}
    teams:
      - name: research
        deployment_tags: {region: [eu]}
        projects:
          - name: lab
            keys:
              - {name: k1, secret: sk-odock-routing-test-key-1}
"""


apply = odock_apply_text


def test_routing_applies_idempotently_and_compiles(tmp_path):
    apply(tmp_path, FILE)
    small = Model.objects.get(name="small")
    assert (small.routing_strategy, small.max_attempts, small.attempt_timeout_seconds) == (
        "priority",
        4,
        12.5,
    )
    assert (
        small.fallback_on_error,
        small.fallback_on_context_window,
        small.fallback_on_content_policy,
    ) == (True, False, True)
    assert [f.fallback.name for f in ModelFallback.objects.filter(model=small)] == ["big", "mid"]
    assert Deployment.objects.get(upstream_model="big-eu").priority == 1
    assert sorted(DeploymentTagRule.objects.values_list("tag", "allowed_values")) == [
        ("region", ["eu"]),
        ("region", ["eu", "us"]),
    ]
    # A model without a routing block keeps the defaults.
    assert Model.objects.get(name="big").routing_strategy == "weighted"

    assert "created 0, updated 0, deleted 0" in apply(tmp_path, FILE)

    snapshot = snapshot_compile()
    entry = snapshot.models["small"]
    assert entry.strategy == "priority" and entry.fallback_models == ("big", "mid")
    assert entry.max_attempts == 4 and entry.attempt_timeout_seconds == 12.5
    # A reservation holds the dearest price among the model and its fallbacks.
    assert (str(entry.reserve_input_per_mtok), str(entry.reserve_output_per_mtok)) == (
        "5.000000",
        "30.000000",
    )
    [key] = snapshot.keys_by_digest.values()
    # The team narrows the organisation's residency; it can never widen it.
    assert key.required_tags == (("region", frozenset({"eu"})),)


def test_changed_fallbacks_and_tags_replace_the_old_ones(tmp_path):
    apply(tmp_path, FILE)
    changed = FILE.replace("fallback_models: [big, mid]", "fallback_models: [mid]").replace(
        "        deployment_tags: {region: [eu]}\n", ""
    )
    out = apply(tmp_path, changed)
    small = Model.objects.get(name="small")
    assert [f.fallback.name for f in ModelFallback.objects.filter(model=small)] == ["mid"]
    assert "deleted 2" in out  # the big fallback and the team's tag rule
    assert list(DeploymentTagRule.objects.values_list("allowed_values", flat=True)) == [
        ["eu", "us"]
    ]


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        ("fallback_models: [big, mid]", "models[1].routing.fallback_models[0]: unknown model"),
        ("fallback_models: [small]", "a model cannot be its own fallback"),
        ("strategy: priority", "models[1].routing.strategy"),
        ("fallback_on: [error, content_policy]", "models[1].routing.fallback_on[0]"),
        ("deployment_tags: {region: [eu]}", "teams[0].deployment_tags.region"),
    ],
)
def test_bad_routing_names_the_path_and_changes_nothing(tmp_path, replace, expected):
    bad = {
        "fallback_models: [big, mid]": "fallback_models: [nope]",
        "fallback_models: [small]": "fallback_models: [small]",
        "strategy: priority": "strategy: fastest",
        "fallback_on: [error, content_policy]": "fallback_on: [always]",
        "deployment_tags: {region: [eu]}": "deployment_tags: {region: []}",
    }[replace]
    text = (
        FILE.replace("fallback_models: [big, mid]", "fallback_models: [small]")
        if (replace == "fallback_models: [small]")
        else FILE.replace(replace, bad)
    )
    with pytest.raises(CommandError) as info:
        apply(tmp_path, text)
    assert expected in str(info.value)
    assert not Model.objects.exists() and not DeploymentTagRule.objects.exists()
