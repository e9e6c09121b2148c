"""The second held-out corpus (``apps/guardrails/heldout2/``, from Mimesis) is frozen and
well formed, and keeps floors on the detectors that no one tuned on it.

- ``scripts/build_heldout2.py --check`` rebuilds it from its seed and must match the
  committed files byte for byte (a Mimesis upgrade that changes its data fails here).
- Every line has text, labels and a source; each family has the lines the README promises.
- Floors: issue 18's targets (precision ≥ 0.97, recall ≥ 0.95). Where the first and only
  evaluation on this corpus measured less, the floor is that measured level and the target
  is an xfail(strict) test (it turns red the day it passes, so the floor gets raised). The
  figures are a clean held-out measure only while no detector is changed by reading this
  corpus's misses.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if "guardrail_eval" not in sys.modules:  # loaded as test_heldout.py loads it (not a package)
    _spec = importlib.util.spec_from_file_location(
        "guardrail_eval", ROOT / "scripts/guardrail_eval.py"
    )
    sys.modules["guardrail_eval"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["guardrail_eval"])
guardrail_eval = sys.modules["guardrail_eval"]
HELDOUT2_DIR = guardrail_eval.HELDOUT2_DIR
FAMILIES = {"phone": 120, "card": 90, "email": 40}
TARGET = (0.97, 0.95)  # issue 18: precision, recall on a held-out corpus
# First evaluation (the untouched figure): phone 1.000 / 0.908. 10 of the 11 misses are
# "+1" numbers whose exchange starts with 0 or 1, which the NANP never assigns (Mimesis
# draws exchanges at random); the detector keeps the numbering plan's rule there.
SHORTFALL = {"phone": (0.97, 0.90)}


@pytest.fixture(scope="module")
def heldout2_scores():
    return guardrail_eval.evaluate(guardrail_eval.load_corpus(HELDOUT2_DIR))


def test_the_second_corpus_is_frozen_and_rebuilds_identically():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_heldout2.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_line_has_text_labels_and_a_source():
    counts: dict[str, int] = dict.fromkeys(FAMILIES, 0)
    negatives = 0
    for path in sorted(HELDOUT2_DIR.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            assert set(row) == {"text", "labels", "source"}, f"{path.name}:{n}"
            assert row["text"] and row["source"].startswith(("mimesis:", "negative:mimesis:"))
            assert set(row["labels"]) <= set(FAMILIES), f"{path.name}:{n}"
            for label in row["labels"]:
                counts[label] += 1
            negatives += not row["labels"]
    assert counts == FAMILIES
    assert negatives == 200


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_heldout2_floors(heldout2_scores, name):
    precision, recall = SHORTFALL.get(name, TARGET)
    score = heldout2_scores[name]
    assert score.precision >= precision, f"{name}: precision {score.precision:.3f}"
    assert score.recall >= recall, f"{name}: recall {score.recall:.3f}"


def test_nothing_fires_on_the_hard_negatives(heldout2_scores):
    # Every false positive of every detector: the negatives and the other families' lines.
    assert {n: s.fp for n, s in heldout2_scores.items() if s.fp} == {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="below target"))
        for n in SHORTFALL
    ],
)
def test_heldout2_targets_not_met_yet(heldout2_scores, name):
    score = heldout2_scores[name]
    assert score.precision >= TARGET[0] and score.recall >= TARGET[1]


def test_eval_script_reports_all_three_corpora():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "guardrail_eval.py"), "--corpus", "all", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = json.loads(result.stdout)
    assert set(out) == {"tuning", "heldout", "heldout2"}
    assert out["heldout2"]["card"]["tp"] == 90
