"""The second held-out corpus (``apps/guardrails/heldout2/``, from Mimesis) is frozen and
well formed.

- ``scripts/build_heldout2.py --check`` rebuilds it from its seed and must match the
  committed files byte for byte (a Mimesis upgrade that changes its data fails here).
- Every line has text, labels and a source; each family has the lines the README promises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELDOUT2_DIR = ROOT / "apps" / "guardrails" / "heldout2"
FAMILIES = {"phone": 120, "card": 90, "email": 40}


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
