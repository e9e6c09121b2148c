"""The held-out corpus (``apps/guardrails/heldout/``) keeps the detectors honest, and
findings are recorded under the rule that made them.

- The corpus is frozen: ``scripts/build_heldout.py --check`` rebuilds it from its seed and
  must match the committed files byte for byte.
- Floors on it, per detector: issue 18's targets (precision ≥ 0.97, recall ≥ 0.95) for every
  PII and secret detector, all met. The phone and card rows were met only after this
  corpus's misses had been read (its README's honesty log), so the clean figure for those
  two is the second held-out corpus's (``test_heldout2.py``).
- Findings of the ``secrets`` rule are recorded as ``secrets`` with the sub-kind beside it,
  end to end through the gateway, and filters and the dashboard still find old records that
  named them ``secret.<kind>``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import openai
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.audit.models import RequestLog
from apps.audit.selectors import finding_q
from apps.guardrails.models import GuardrailRule
from tests.factories import records_wait

ROOT = Path(__file__).resolve().parents[2]
if "guardrail_eval" not in sys.modules:  # loaded as test_corpus.py loads it (not a package)
    _spec = importlib.util.spec_from_file_location(
        "guardrail_eval", ROOT / "scripts/guardrail_eval.py"
    )
    sys.modules["guardrail_eval"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["guardrail_eval"])
guardrail_eval = sys.modules["guardrail_eval"]
HELDOUT_DIR = guardrail_eval.HELDOUT_DIR
load_corpus = guardrail_eval.load_corpus
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
PII = ("email", "phone", "card", "iban", "us_ssn", "ip_address")
TARGET = (0.97, 0.95)  # issue 18: precision, recall on the held-out corpus
FLOORS = {**dict.fromkeys(PII, TARGET), "secret.*": TARGET}


@pytest.fixture(scope="module")
def heldout_scores():
    return guardrail_eval.evaluate(load_corpus(HELDOUT_DIR))


def test_the_corpus_is_frozen_and_rebuilds_identically():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_heldout.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_line_has_text_labels_and_a_source():
    detectors = set(PII)
    for path in sorted(HELDOUT_DIR.glob("*.jsonl")):
        if path.name == "prompt_injection.jsonl":
            continue  # built by its own script, see README.prompt_injection.md
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            assert set(row) == {"text", "labels", "source"}, f"{path.name}:{n}"
            assert row["source"] and row["text"]
            for label in row["labels"]:
                assert label in detectors or label.startswith("secret."), f"{path.name}:{n}"
    rows = load_corpus(HELDOUT_DIR)
    for family in (*PII, "secret."):
        positives = sum(1 for _, labels, _ in rows if any(x.startswith(family) for x in labels))
        assert positives >= 60, family
    assert sum(1 for _, labels, _ in rows if not labels) >= 160


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_heldout_floors(heldout_scores, name):
    precision, recall = FLOORS[name]
    score = heldout_scores[name]
    assert score.precision >= precision, f"{name}: precision {score.precision:.3f}"
    assert score.recall >= recall, f"{name}: recall {score.recall:.3f}"


def test_eval_script_reports_both_corpora_as_json():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "guardrail_eval.py"), "--corpus", "both", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = json.loads(result.stdout)
    assert set(out) == {"tuning", "heldout"}
    assert out["heldout"]["email"]["recall"] >= 0.95
    assert {"precision", "recall", "tp", "fp", "fn"} <= set(out["tuning"]["phone"])


# --- phone rule options through the policy file and the model --------------------------------


@pytest.mark.django_db
def test_phone_rule_options_apply_and_reach_the_detector(tmp_path):
    from apps.gateway.guardrails import _detector_config
    from apps.guardrails.detectors import build_detectors
    from tests.factories import odock_apply_text

    odock_apply_text(
        tmp_path,
        """
organizations:
  - name: acme
    guardrails:
      - {detector: phone, action: redact, regions: [DE, AT], leniency: strict_grouping}
""",
    )
    rule = GuardrailRule.objects.get(detector="phone")
    assert rule.settings == {"regions": ["DE", "AT"], "leniency": "strict_grouping"}

    class Effective:  # what the gateway compiles from: the rule's detector and settings
        detector = "phone"

        def settings_dict(self):
            return rule.settings

    [detector] = build_detectors(_detector_config(Effective()))
    assert detector.regions == ("DE", "AT") and detector.leniency_name == "strict_grouping"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"regions": ["ZZ"]}, "unknown region codes"),
        ({"leniency": "lax"}, "leniency: one of"),
        ({"region": ["US"]}, "Unknown phone settings"),
    ],
)
def test_the_model_refuses_bad_phone_settings(settings, message):
    from tests.factories import org_create

    rule = GuardrailRule(organization=org_create(), detector="phone", settings=settings)
    with pytest.raises(ValidationError) as info:
        rule.full_clean()
    assert message in str(info.value)


# --- finding names, end to end ---------------------------------------------------------------


@pytest.fixture
def world(gateway_factory, fake_upstream):
    from tests.factories import key_create, model_create, project_create, provider_create

    model_create("m", provider_create(fake_upstream.url))
    project = project_create()
    return {
        "gateway": gateway_factory(),
        "org": project.team.organization,
        "key": key_create(project),
    }


def _old_record(org_id: int, finding_types: str) -> RequestLog:
    """A record as the gateway wrote them before findings named their rule."""
    return RequestLog.objects.create(
        request_id=f"req-old-{finding_types}",
        created_at=timezone.now() - timedelta(minutes=5),
        organization_id=org_id,
        endpoint="chat.completions",
        model_requested="m",
        status_code=200,
        finding_types=finding_types,
        findings=[{"detector": n, "action": "flag", "stage": "input", "count": 1}
                  for n in finding_types.split(",")],
    )  # fmt: skip


def test_a_secret_finding_is_recorded_and_filtered_under_its_rule(world):
    from apps.dashboard.selectors import dashboard_scope, findings_by_type

    GuardrailRule.objects.create(organization=world["org"], detector="secrets", action="flag")
    world["gateway"].snapshots.reload()
    client = openai.OpenAI(
        base_url=world["gateway"].url + "/v1", api_key=world["key"].secret, max_retries=0
    )
    response = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": f"key {AWS_KEY} and {AWS_KEY}"}]
    )
    request_id = response.headers["x-request-id"]
    records_wait(world["gateway"], 1)
    record = RequestLog.objects.get(request_id=request_id)
    assert record.finding_types == "secrets"
    assert record.findings == [
        {
            "detector": "secrets",
            "kind": "aws_access_key",
            "action": "flag",
            "stage": "input",
            "count": 2,  # the key twice
        }
    ]
    assert AWS_KEY not in str(record.findings)

    old = _old_record(world["org"].pk, "email,secret.jwt")
    other = _old_record(world["org"].pk, "email")
    by_rule = set(RequestLog.objects.filter(finding_q("secrets")))
    assert by_rule == {record, old}  # the rule's name finds new and old records
    assert set(RequestLog.objects.filter(finding_q("secrets:aws_access_key"))) == {record}
    assert set(RequestLog.objects.filter(finding_q("secret.aws_access_key"))) == {record}
    assert set(RequestLog.objects.filter(finding_q("secret.jwt"))) == {old}
    assert set(RequestLog.objects.filter(finding_q("email"))) == {old, other}

    chart = findings_by_type(dashboard_scope(range_name="24h", organization_id=world["org"].pk))
    assert {"type": "secrets", "requests": 2} in chart["types"]  # one name for old and new
    assert not any(t["type"].startswith("secret.") for t in chart["types"])
