"""The labelled corpus holds every detector above a stated floor of precision and recall.

Floors (per text, see ``scripts/guardrail_eval.py``):

- PII (email, phone, card, iban, us_ssn, ip_address) and every known-format secret detector:
  precision ≥ 0.95, recall ≥ 0.90.
- ``secret.high_entropy`` (a heuristic): precision ≥ 0.85, recall ≥ 0.85.
- ``prompt_injection`` (phrase heuristics; paraphrases, other languages and leetspeak pass, and
  the corpus keeps such misses on purpose): precision ≥ 0.90, recall ≥ 0.80.
- ``custom.*`` (deterministic regex/keyword rules): precision = recall = 1.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("guardrail_eval", ROOT / "scripts/guardrail_eval.py")
guardrail_eval = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("guardrail_eval", guardrail_eval)  # dataclasses look their module up
_spec.loader.exec_module(guardrail_eval)

PII = ("email", "phone", "card", "iban", "us_ssn", "ip_address")
KNOWN_SECRETS = (
    "secret.aws_access_key",
    "secret.aws_secret_key",
    "secret.github_token",
    "secret.slack_token",
    "secret.slack_webhook",
    "secret.stripe_key",
    "secret.google_api_key",
    "secret.openai_key",
    "secret.anthropic_key",
    "secret.odock_key",
    "secret.private_key",
    "secret.jwt",
    "secret.connection_password",
)
CUSTOM = (
    "custom.project_codes",
    "custom.codenames",
    "custom.employee_ids",
    "custom.internal_hosts",
)
FLOORS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(PII, (0.95, 0.90)),
    **dict.fromkeys(KNOWN_SECRETS, (0.95, 0.90)),
    "secret.*": (0.95, 0.90),
    "secret.high_entropy": (0.85, 0.85),
    "prompt_injection": (0.90, 0.80),
    **dict.fromkeys(CUSTOM, (1.0, 1.0)),
}
# The corpus file of each family and the labels that make a line positive for it.
FAMILIES = {
    "email": ("email",),
    "phone": ("phone",),
    "card": ("card",),
    "iban": ("iban",),
    "us_ssn": ("us_ssn",),
    "ip_address": ("ip_address",),
    "secrets": KNOWN_SECRETS + ("secret.high_entropy",),
    "prompt_injection": ("prompt_injection",),
    "custom": CUSTOM,
}


@pytest.fixture(scope="module")
def rows():
    return guardrail_eval.load_corpus()


@pytest.fixture(scope="module")
def scores(rows):
    return guardrail_eval.evaluate(rows)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_has_40_positives_and_40_negatives(rows, family):
    labels = set(FAMILIES[family])
    in_file = [lab for _, lab, where in rows if where.startswith(f"{family}.jsonl:")]
    positives = sum(1 for lab in in_file if lab & labels)
    negatives = sum(1 for lab in in_file if not lab & labels)
    assert positives >= 40, f"{family}: {positives} positives"
    assert negatives >= 40, f"{family}: {negatives} negatives"


def test_every_label_names_a_detector(rows):
    known = set(FLOORS) - {"secret.*"} | {"secret.high_entropy"}
    for text, labels, where in rows:
        assert labels <= known, f"{where}: unknown label in {sorted(labels)}"
        assert text.strip(), where


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_precision_and_recall_floors(scores, name):
    min_precision, min_recall = FLOORS[name]
    score = scores.get(name)
    assert score is not None and score.support > 0, f"{name}: no positive example in the corpus"
    assert score.precision >= min_precision, (
        f"{name}: precision {score.precision:.3f} < {min_precision}; false positives:\n"
        + "\n".join(score.false_alarms)
    )
    assert score.recall >= min_recall, (
        f"{name}: recall {score.recall:.3f} < {min_recall}; misses:\n" + "\n".join(score.misses)
    )


def test_no_detector_fires_outside_the_floors_table(scores):
    # A detector that fires without being listed (a typo, a new detector) must get a floor.
    assert set(scores) <= set(FLOORS), sorted(set(scores) - set(FLOORS))


def test_eval_script_prints_the_table(capsys):
    assert guardrail_eval.main([]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "prompt_injection" in out and "secret.jwt" in out
