"""Guardrail rules from odock_apply, their inheritance as the effective policy shows it, and
the rules the model refuses."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError

from apps.guardrails.models import GuardrailRule
from apps.keys.models import VirtualKey
from apps.policies.compile import snapshot_compile
from apps.policies.selectors import effective_policy_for_key
from tests.factories import odock_apply_text

pytestmark = pytest.mark.django_db

FILE = """
organizations:
  - name: acme
    guardrails:
      - {detector: secrets, action: block, stage: both}
      - {detector: email, action: redact, restore_in_response: true}
      - {detector: prompt_injection, action: flag, mode: shadow, threshold: 0.8}
      - {detector: custom, name: falcon, keywords: [falcon], action: block}
      - {detector: input_limits, max_messages: 50, max_input_bytes: 200000}
    teams:
      - name: research
        guardrails:
          - {detector: email, action: flag}
          - {detector: prompt_injection, action: block}
        projects:
          - name: lab
            keys:
              - {name: k1, secret: sk-odock-guardrail-test-key-1}
"""


apply = odock_apply_text


def test_guardrails_apply_idempotently_and_resolve_tighten_only(tmp_path):
    apply(tmp_path, FILE)
    assert GuardrailRule.objects.count() == 7
    assert "created 0, updated 0, deleted 0" in apply(tmp_path, FILE)
    falcon = GuardrailRule.objects.get(name="falcon")
    assert falcon.settings == {"keywords": ["falcon"]}

    policy = effective_policy_for_key(VirtualKey.objects.get(name="k1"))["guardrails"]
    effective = {r["rule"]: r for r in policy["effective"]}
    assert effective["email"]["action"] == "redact"  # the team's flag would loosen it
    assert effective["email"]["from"] == "org:acme"
    assert effective["prompt_injection"] == {  # the team tightens shadow to an enforced block
        "rule": "prompt_injection",
        "action": "block",
        "mode": "enforce",
        "stages": ["input"],
        "from": "team:research",
    }
    why = "email: would loosen org:acme's rule"
    assert policy["ignored"] == [{"level": "team:research", "why": why}]
    [key] = snapshot_compile().keys_by_digest.values()
    guard = key.guardrails
    assert {c.rule.key_name for c in guard.input} == {
        "secrets",
        "email",
        "prompt_injection",
        "custom.falcon",
    }
    assert [c.rule.key_name for c in guard.output] == ["secrets"]
    assert guard.limits is not None and guard.restore


def test_invalid_rules_are_refused_with_their_path(tmp_path):
    bad = FILE.replace("keywords: [falcon]", "regex: '(unclosed'")
    with pytest.raises(CommandError) as info:
        apply(tmp_path, bad)
    assert "organizations[0].guardrails[3]" in str(info.value) and "regex" in str(info.value)
    assert not GuardrailRule.objects.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"detector": "custom", "name": "x"}, "regex or a keywords"),
        ({"detector": "custom", "name": "", "settings": {"keywords": ["a"]}}, "need a name"),
        ({"detector": "prompt_injection", "action": "redact"}, "blocked or flagged"),
        ({"detector": "input_limits", "settings": {"max_messages": 0}}, "Positive integers"),
        ({"detector": "email", "action": "flag", "restore_in_response": True}, "restore"),
        ({"detector": "plugin", "name": "mod", "stage": "output"}, "on the prompt"),
    ],
)
def test_the_model_refuses_rules_that_cannot_work(fields, message):
    from tests.factories import org_create

    rule = GuardrailRule(organization=org_create(), **fields)
    with pytest.raises(ValidationError) as info:
        rule.full_clean()
    assert message in str(info.value)
