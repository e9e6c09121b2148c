"""Custom rules per policy: a regex and/or a keyword list, compiled once when built."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Finding, word_boundary_pattern
from .prep import is_word_char, prepare

_RULE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_SEARCHED_KEYWORDS = 24
_ASCII_WORDS = re.compile(r"[a-z0-9]+(?:[^a-z0-9]+[a-z0-9]+)*")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def _word_parts(keyword: str) -> frozenset[bytes] | None:
    """The ASCII words of a keyword ("Blue Harbor" → {b"blue", b"harbor"}), or None when the
    keyword has other characters (then the word set cannot tell whether it is present)."""
    low = keyword.lower()
    if not low.isascii() or not _ASCII_WORDS.fullmatch(low):
        return None
    return frozenset(p.encode() for p in _WORD_SPLIT.split(low) if p)


def _required_prefix(pattern: re.Pattern[str]) -> tuple[str, bool]:
    """(literal, folded): the literal a match must start with, skipping leading anchors
    (``\b``, ``^``), lower-cased when the pattern ignores case; ("", False) when there is none
    or the parser is not the one we know (``re._parser`` is internal). A folded literal only
    gates ASCII text: Unicode case-insensitive matching ("ſ" matches "s") outruns lower()."""
    try:
        from re import _constants as c  # noqa: PLC0415
        from re import _parser
    except ImportError:  # pragma: no cover - other Python versions
        return "", False
    try:
        parsed = _parser.parse(pattern.pattern, pattern.flags)
        folded = bool(parsed.state.flags & re.IGNORECASE)
    except Exception:  # pragma: no cover - compiled already, cannot fail in practice
        return "", False
    literal = []
    for op, arg in parsed:
        if op is c.AT and not literal:
            continue
        if op is c.LITERAL:
            literal.append(chr(arg))
            continue
        break
    prefix = "".join(literal)
    if folded:
        return (prefix.lower(), True) if prefix.isascii() else ("", False)
    return prefix, False


class CustomDetector:
    """Reports ``custom.<name>`` for every regex match and every keyword found on word
    boundaries. ``case_sensitive`` (default false) applies to both the keywords and the
    regex, so one switch means one thing."""

    def __init__(
        self,
        name: str,
        *,
        regex: str | Sequence[str] | None = None,
        keywords: Sequence[str] = (),
        case_sensitive: bool = False,
    ) -> None:
        if not _RULE_NAME.fullmatch(name):
            raise ValueError(f"custom rule name {name!r}: use 1-64 letters, digits, _ . -")
        self.name = f"custom.{name}"
        flags = 0 if case_sensitive else re.IGNORECASE
        regexes = [regex] if isinstance(regex, str) else list(regex or ())
        self.patterns: list[re.Pattern[str]] = []
        for source in regexes:
            try:
                pattern = re.compile(source, flags)
            except re.error as exc:
                raise ValueError(f"custom rule {name!r}: invalid regex {source!r}: {exc}") from exc
            if pattern.fullmatch(""):
                raise ValueError(f"custom rule {name!r}: regex {source!r} matches empty text")
            self.patterns.append(pattern)
        words = list(dict.fromkeys(w.strip() for w in keywords if w and w.strip()))
        self.case_sensitive = case_sensitive
        # A few keywords: one substring search each (C speed). Many: one alternation regex.
        self.keywords: tuple[str, ...] = ()
        if len(words) > _MAX_SEARCHED_KEYWORDS:
            self.patterns.append(word_boundary_pattern(words, case_sensitive=case_sensitive))
        elif case_sensitive:
            self.keywords = tuple(words)
        else:
            self.keywords = tuple(w.lower() for w in words)
        if not self.patterns and not self.keywords:
            raise ValueError(f"custom rule {name!r}: give a regex or keywords")
        # Word-set gates for keywords made of plain ASCII words (others are always searched).
        self._parts = tuple(_word_parts(k) for k in self.keywords)
        # A literal every match must contain, when the pattern starts with one (after \b, ^):
        # its absence skips a regex scan that would cost ~20 ns per character.
        self._literals = tuple(_required_prefix(p) for p in self.patterns)

    def scan(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        prepared = prepare(text)
        if self.keywords:
            subject = text if self.case_sensitive else prepared.lower
            n = len(subject)
            words = prepared.words
            for word, parts in zip(self.keywords, self._parts, strict=True):
                if parts is not None and not parts <= words:
                    continue  # a word of the keyword is missing: no substring search needed
                i = subject.find(word)
                while i >= 0:
                    end = i + len(word)
                    if (i == 0 or not is_word_char(subject[i - 1])) and (
                        end == n or not is_word_char(subject[end])
                    ):
                        out.append(Finding(self.name, i, end))
                    i = subject.find(word, i + 1)
        for pattern, (literal, folded) in zip(self.patterns, self._literals, strict=True):
            gated = literal and (not folded or text.isascii())
            if gated and literal not in (prepared.lower if folded else text):
                continue
            for m in pattern.finditer(text):
                if m.end() > m.start():
                    out.append(Finding(self.name, m.start(), m.end()))
        return out

    @classmethod
    def from_config(cls, rule: Mapping[str, Any]) -> CustomDetector:
        """``{"name": ..., "regex": ... | [...], "keywords": [...], "case_sensitive": false}``"""
        unknown = set(rule) - {"name", "regex", "keywords", "case_sensitive"}
        if unknown:
            raise ValueError(f"custom rule: unknown keys {sorted(unknown)}")
        if "name" not in rule:
            raise ValueError("custom rule: 'name' is required")
        return cls(
            str(rule["name"]),
            regex=rule.get("regex"),
            keywords=list(rule.get("keywords") or ()),
            case_sensitive=bool(rule.get("case_sensitive", False)),
        )
