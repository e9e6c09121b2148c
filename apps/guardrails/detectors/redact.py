"""Consistent masking and its inverse.

The same value gets the same placeholder for a whole request (the caller passes one
``numbering`` dict for every message), so a model still sees that two mentions are the same
person, and the response can be restored by swapping placeholders back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .base import Finding

_PLACEHOLDER = re.compile(r"\[([A-Z0-9_]+)_(\d+)\]")
_NON_LABEL = re.compile(r"[^A-Z0-9]+")


def placeholder_label(detector: str) -> str:
    """``email`` → ``EMAIL``, ``secret.aws_access_key`` → ``AWS_ACCESS_KEY``,
    ``custom.project-codes`` → ``PROJECT_CODES``."""
    label = _NON_LABEL.sub("_", detector.rsplit(".", 1)[-1].upper()).strip("_")
    return label or "REDACTED"


def _spans(findings: Iterable[Finding]) -> list[tuple[int, int, str]]:
    """Merge overlapping findings of any detectors into disjoint spans; the widest finding of a
    group names it (a JWT inside a high-entropy run is one secret, masked once)."""
    ordered = sorted(findings, key=lambda f: (f.start, -(f.end - f.start)))
    spans: list[tuple[int, int, str]] = []
    widest = 0
    for f in ordered:
        if f.end <= f.start:
            continue
        if spans and f.start < spans[-1][1]:
            start, end, detector = spans[-1]
            if f.end - f.start > widest:
                detector, widest = f.detector, f.end - f.start
            spans[-1] = (start, max(end, f.end), detector)
            continue
        spans.append((f.start, f.end, f.detector))
        widest = f.end - f.start
    return spans


def redact(
    text: str, findings: Sequence[Finding], *, numbering: dict[str, str] | None = None
) -> tuple[str, list[tuple[str, str]]]:
    """Replace every finding with ``[LABEL_N]``; the same original value keeps the same
    placeholder across calls sharing ``numbering`` (value → placeholder, updated in place).
    Returns the masked text and the (original, placeholder) pairs used in it, in order."""
    if numbering is None:
        numbering = {}
    if not findings:
        return text, []
    counters: dict[str, int] = {}
    for placeholder in numbering.values():
        m = _PLACEHOLDER.fullmatch(placeholder)
        if m:
            label, n = m.group(1), int(m.group(2))
            counters[label] = max(counters.get(label, 0), n)
    parts: list[str] = []
    pairs: list[tuple[str, str]] = []
    used: set[str] = set()
    pos = 0
    for start, end, detector in _spans(findings):
        original = text[start:end]
        placeholder = numbering.get(original)
        if placeholder is None:
            label = placeholder_label(detector)
            counters[label] = counters.get(label, 0) + 1
            placeholder = f"[{label}_{counters[label]}]"
            numbering[original] = placeholder
        if original not in used:
            used.add(original)
            pairs.append((original, placeholder))
        parts.append(text[pos:start])
        parts.append(placeholder)
        pos = end
    parts.append(text[pos:])
    return "".join(parts), pairs


def restore(text: str, pairs: Iterable[tuple[str, str]]) -> str:
    """Put the originals back in one pass (a restored value that happens to contain a
    placeholder-like string is not replaced again). Known limit: a placeholder-shaped string
    the user wrote themselves ("[EMAIL_1]") is indistinguishable from ours."""
    back = {placeholder: original for original, placeholder in pairs}
    if not back or "[" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: back.get(m.group(), m.group()), text)
