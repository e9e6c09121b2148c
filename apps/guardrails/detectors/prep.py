"""Shared, cached views of one text, so each detector does not redo the same pass.

Why this exists: Python's ``re`` scans fast only when a pattern starts with a literal (it
then jumps between occurrences of that literal); a pattern that starts with a class or a
lookbehind is tried at every character, ~15-20 ns each, ~80 µs per 4 KB *per pattern*. So the
detectors find candidates with literal-led patterns over *class strings*: the text mapped
byte-for-byte (``bytes.translate``, a few µs) so that every digit becomes ``0``, every token
character becomes ``b``, and so on. Offsets are unchanged: the text is encoded as Latin-1 with
one ``?`` for every character outside it, one byte per character.

The last text's views are kept (one entry, keyed by identity), because ``scan_all`` hands the
same string to every detector in turn.
"""

from __future__ import annotations

import re

# Digits → "0", upper-case ASCII → "A", lower-case ASCII and Latin-1 letters → "a"; the
# punctuation numbers are written with is kept; anything else → "~".
_KEEP = b" .-()/+:@_="
_CLASS_TABLE = bytes(
    ord("0")
    if 48 <= i <= 57
    else ord("A")
    if 65 <= i <= 90
    else ord("a")
    if 97 <= i <= 122 or (192 <= i <= 255 and i not in (215, 247))
    else i
    if i in _KEEP
    else ord("~")
    for i in range(256)
)
# base64 / base64url alphabet → "b", "=" → "e", anything else → " ".
_TOKEN_TABLE = bytes(
    ord("b")
    if (48 <= i <= 57 or 65 <= i <= 90 or 97 <= i <= 122 or i in b"+/_-")
    else ord("e")
    if i == 61
    else ord(" ")
    for i in range(256)
)

# Lower-case ASCII letters and digits are kept, everything else splits words.
_WORD_TABLE = bytes(i if (48 <= i <= 57 or 97 <= i <= 122) else 32 for i in range(256))

# A run of digits and number punctuation of 7+ characters: every phone, card, SSN, IPv4
# candidate is inside one (they all have 7+ characters counting separators).
_NUMERIC = re.compile(rb"0[0 .\-()/]{6,}")
# Tokens of 16+ base64(url) characters, optional "=" padding. Written out so that the pattern
# starts with a 16-byte literal (the fast path).
MIN_TOKEN = 16
_TOKEN = re.compile(b"b" * MIN_TOKEN + rb"b*e{0,2}")


class Prepared:
    """Views of one text. ``words`` (the set of lower-case alphanumeric words, as bytes) is
    computed on first use: it costs about as much as 15 substring searches and saves many
    more for detectors with long keyword lists."""

    __slots__ = ("_words", "classes", "lower", "numeric", "text", "tokens")

    def __init__(
        self,
        text: str,
        lower: str,
        classes: bytes,
        numeric: tuple[tuple[int, int], ...],
        tokens: tuple[tuple[int, int], ...],
    ) -> None:
        self.text = text
        self.lower = lower  # same length as text
        self.classes = classes  # _CLASS_TABLE view
        self.numeric = numeric  # spans of _NUMERIC runs
        self.tokens = tokens  # spans of 16+ character base64(url) tokens
        self._words: frozenset[bytes] | None = None

    @property
    def words(self) -> frozenset[bytes]:
        if self._words is None:
            raw = self.lower.encode("latin-1", "replace").translate(_WORD_TABLE)
            self._words = frozenset(raw.split())
        return self._words


_last: tuple[str | None, Prepared | None] = (None, None)


def prepare(text: str, *, cache: bool = True) -> Prepared:
    """The views of ``text``, computed once for a run of detectors over the same string
    (``cache=False`` for a side computation that must not evict the text being scanned)."""
    global _last
    cached_text, cached = _last
    if cached_text is text and cached is not None:
        return cached
    raw = text.encode("latin-1", "replace")
    lower = text.lower()
    if len(lower) != len(text):  # "İ".lower() is two characters: keep offsets aligned
        lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    classes = raw.translate(_CLASS_TABLE)
    numeric = tuple(m.span() for m in _NUMERIC.finditer(classes))
    tokens = tuple(m.span() for m in _TOKEN.finditer(raw.translate(_TOKEN_TABLE)))
    prepared = Prepared(text, lower, classes, numeric, tokens)
    if cache:
        _last = (text, prepared)
    return prepared


def is_word_char(ch: str) -> bool:
    """``\\w`` for one character (letters of any script, digits, underscore)."""
    return ch.isalnum() or ch == "_"
