"""The detector contract: a finding is a named span; a detector turns text into findings.

Pure data and pure functions: detectors run on the gateway's event loop, so nothing here may
touch Django, the network or the disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Finding:
    """One match: which detector, where (character offsets into the scanned text), how sure."""

    detector: str
    start: int
    end: int
    score: float = 1.0


@runtime_checkable
class Detector(Protocol):
    """Anything with a ``name`` and a ``scan``; a detector may report several finding names
    (the secrets detector reports ``secret.jwt``, ``secret.openai_key``, …)."""

    name: str

    def scan(self, text: str) -> list[Finding]: ...


# Detectors that report several kinds name their findings "<prefix><kind>"; the rule that
# enabled them (and that audit records, filters and the dashboard name) is the detector.
_KIND_PREFIXES = {"secret.": "secrets"}


def rule_and_kind(name: str) -> tuple[str, str | None]:
    """The rule's detector name and the sub-kind of a finding name, so a filter on the rule
    finds what it flagged: ``secret.aws_access_key`` → (``secrets``, ``aws_access_key``);
    ``email`` → (``email``, None); ``custom.codes`` stays the custom rule's own name."""
    for prefix, rule in _KIND_PREFIXES.items():
        if name.startswith(prefix):
            return rule, name[len(prefix) :]
    return name, None


def kind_prefix(rule: str) -> str | None:
    """The prefix a rule's findings had in their name before records named the rule
    (``secrets`` → ``secret.``), so filters keep finding old records."""
    for prefix, name in _KIND_PREFIXES.items():
        if name == rule:
            return prefix
    return None


def note_finding(findings: list[dict], name: str, action: str, stage: str) -> None:
    """Count one finding into a request's findings: ``{"detector", "kind"?, "action",
    "stage", "count"}``, one entry per distinct (detector, kind, action, stage); never text."""
    detector, kind = rule_and_kind(name)
    for finding in findings:
        if (
            finding["detector"] == detector
            and finding.get("kind") == kind
            and finding["action"] == action
            and finding["stage"] == stage
        ):
            finding["count"] = finding.get("count", 1) + 1
            return
    entry: dict = {"detector": detector, "action": action, "stage": stage, "count": 1}
    if kind is not None:
        entry["kind"] = kind
    findings.append(entry)


def blocked_label(name: str) -> str:
    """How a block names its cause to the client: ``'secrets' (aws_access_key)``."""
    detector, kind = rule_and_kind(name)
    return f"'{detector}'" if kind is None else f"'{detector}' ({kind})"


def collapse(findings: Iterable[Finding]) -> list[Finding]:
    """Sort findings and merge overlapping (or touching-through-overlap) spans of the same
    detector, so one secret matched twice is reported, and masked, once."""
    ordered = sorted(findings, key=lambda f: (f.detector, f.start, f.end))
    merged: list[Finding] = []
    for f in ordered:
        last = merged[-1] if merged else None
        if last is not None and last.detector == f.detector and f.start < last.end:
            if f.end > last.end or f.score > last.score:
                merged[-1] = Finding(
                    last.detector, last.start, max(last.end, f.end), max(last.score, f.score)
                )
            continue
        merged.append(f)
    merged.sort(key=lambda f: (f.start, f.end, f.detector))
    return merged


def scan_all(detectors: Sequence[Detector], text: str) -> list[Finding]:
    """Run every detector over ``text``: findings sorted by position, overlapping findings of
    the same detector collapsed into one."""
    if not text:
        return []
    found: list[Finding] = []
    for detector in detectors:
        found.extend(detector.scan(text))
    if len(found) < 2:
        return found
    return collapse(found)


def word_boundary_pattern(words: Sequence[str], *, case_sensitive: bool) -> re.Pattern[str]:
    """One alternation for a keyword list, longest first, bounded so ``cat`` does not match
    inside ``category`` (boundaries that also work for keywords like ``C++``)."""
    alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", flags)
