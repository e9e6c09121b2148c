"""Precision and recall of the guardrail detectors over the labelled corpus.

Three corpora, same line format: (a) ``apps/guardrails/corpus/`` (*tuning*: written while
the detectors were tuned, so it flatters them), (b) ``apps/guardrails/heldout/`` (*held-out*:
generated from Faker and published data by ``scripts/build_heldout.py``, frozen, never tuned
on; its lines also carry a ``"source"``) and (c) ``apps/guardrails/heldout2/`` (a second
held-out corpus from Mimesis, ``scripts/build_heldout2.py``, for phone, card, email and hard
negatives: (b)'s phone and card misses were read while those detectors were fixed, (c)'s
were not). Every line is ``{"text": ..., "labels": [...]}``: the
detector names that should fire on the text (an empty list: none should). Every detector runs
on every line (all built-in detectors plus the corpus's custom rules, :data:`CORPUS_CONFIG`), so
a phone detector firing on an IBAN example counts against the phone detector.

Counting is per text: a detector that fires on a text labelled with it is a true positive,
on a text not labelled with it a false positive; a label it missed is a false negative.
``secret.*`` is also reported as one family (any secret finding on a text with any secret
label counts as a hit).

Usage::

    .venv/bin/python scripts/guardrail_eval.py [--corpus tuning|heldout|heldout2|both|all]
        [--misses] [--json]

``both`` is tuning and heldout, ``all`` adds heldout2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.guardrails.detectors import all_detectors_config, build_detectors, scan_all  # noqa: E402

CORPUS_DIR = ROOT / "apps" / "guardrails" / "corpus"
HELDOUT_DIR = ROOT / "apps" / "guardrails" / "heldout"
HELDOUT2_DIR = ROOT / "apps" / "guardrails" / "heldout2"
CORPORA = {"tuning": CORPUS_DIR, "heldout": HELDOUT_DIR, "heldout2": HELDOUT2_DIR}
GROUPS = {"both": ("tuning", "heldout"), "all": ("tuning", "heldout", "heldout2")}
# The custom rules that the corpus's custom.jsonl is labelled against.
CORPUS_CUSTOM_RULES = [
    {"name": "project_codes", "regex": r"\bPRJ-\d{4}\b"},
    {"name": "codenames", "keywords": ["falcon", "blue harbor", "nightjar"]},
    {"name": "employee_ids", "regex": r"\bEMP\d{6}\b", "case_sensitive": True},
    {"name": "internal_hosts", "regex": r"\b[a-z0-9-]+\.corp\.example\.com\b"},
]
CORPUS_CONFIG = {**all_detectors_config(), "custom": CORPUS_CUSTOM_RULES}
SECRET_FAMILY = "secret.*"  # noqa: S105 - a family name, not a password


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)  # texts of false negatives
    false_alarms: list[str] = field(default_factory=list)  # texts of false positives

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def support(self) -> int:
        return self.tp + self.fn


def load_corpus(directory: Path = CORPUS_DIR) -> list[tuple[str, set[str], str]]:
    """(text, labels, source file) for every line of every corpus file (an optional
    ``"source"`` key says where a held-out line came from)."""
    rows = []
    for path in sorted(directory.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            item = json.loads(line)
            if not {"text", "labels"} <= set(item) <= {"text", "labels", "source"}:
                raise ValueError(f"{path.name}:{n}: expected keys text, labels (and source)")
            rows.append((item["text"], set(item["labels"]), f"{path.name}:{n}"))
    return rows


def evaluate(rows: list[tuple[str, set[str], str]] | None = None) -> dict[str, Score]:
    """Per-detector scores (plus the ``secret.*`` family) over the corpus."""
    rows = load_corpus() if rows is None else rows
    detectors = build_detectors(CORPUS_CONFIG)
    scores: dict[str, Score] = defaultdict(Score)
    for text, labels, where in rows:
        fired = {f.detector for f in scan_all(detectors, text)}
        for name in fired | labels:
            score = scores[name]
            if name in fired and name in labels:
                score.tp += 1
            elif name in fired:
                score.fp += 1
                score.false_alarms.append(f"{where}: {text[:120]!r}")
            else:
                score.fn += 1
                score.misses.append(f"{where}: {text[:120]!r}")
        secret_fired = any(n.startswith("secret.") for n in fired)
        secret_label = any(n.startswith("secret.") for n in labels)
        family = scores[SECRET_FAMILY]
        if secret_fired and secret_label:
            family.tp += 1
        elif secret_fired:
            family.fp += 1
        elif secret_label:
            family.fn += 1
    return dict(scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--misses", action="store_true", help="list false negatives/positives")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--corpus",
        choices=(*CORPORA, *GROUPS),
        default="tuning",
        help="which labelled corpus to score (default: tuning)",
    )
    args = parser.parse_args(argv)

    names = GROUPS.get(args.corpus, (args.corpus,))
    results = {}
    for corpus in names:
        rows = load_corpus(CORPORA[corpus])
        results[corpus] = (rows, evaluate(rows))
    if args.json:
        out = {
            corpus: {
                name: {
                    "precision": s.precision,
                    "recall": s.recall,
                    "tp": s.tp,
                    "fp": s.fp,
                    "fn": s.fn,
                }
                for name, s in sorted(scores.items())
            }
            for corpus, (_, scores) in results.items()
        }
        print(json.dumps(out if args.corpus in GROUPS else out[args.corpus], indent=2))
        return 0
    for corpus, (rows, scores) in results.items():
        _print_table(corpus, rows, scores, misses=args.misses)
    return 0


def _print_table(
    corpus: str, rows: list[tuple[str, set[str], str]], scores: dict[str, Score], *, misses: bool
) -> None:
    negatives = sum(1 for _, labels, _ in rows if not labels)
    where = CORPORA[corpus].relative_to(ROOT)
    print(f"{corpus} corpus: {len(rows)} texts ({negatives} with no label) from {where}")
    header = ("detector", "support", "tp", "fp", "fn", "precision", "recall")
    print("{:<30} {:>7} {:>4} {:>4} {:>4} {:>9} {:>7}".format(*header))
    for name, s in sorted(scores.items()):
        print(
            f"{name:<30} {s.support:>7} {s.tp:>4} {s.fp:>4} {s.fn:>4}"
            f" {s.precision:>9.3f} {s.recall:>7.3f}"
        )
    if misses:
        for name, s in sorted(scores.items()):
            for line in s.misses:
                print(f"MISS  {name}: {line}")
            for line in s.false_alarms:
                print(f"FALSE {name}: {line}")


if __name__ == "__main__":
    raise SystemExit(main())
