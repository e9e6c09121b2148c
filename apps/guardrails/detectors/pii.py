"""PII detectors: email, phone, payment card, IBAN, US SSN, IP address.

Finding candidates is kept cheap and linear: email and international phone numbers start
from literal "@" / "+" scans; everything numeric (cards, SSNs, national phone formats, IPv4)
is only looked for inside the text's runs of 7+ digits-and-separators, found once per text on
a byte class string (``prep.py``); IBANs start where the class string has two capitals and two
digits. Candidates are then *validated* (Luhn and issuer prefixes, IBAN length table and
mod-97, SSA rules, ``ipaddress``, per-country digit counts), because a loose regex on a hot
path produces more noise than signal.

Phone numbers: Google's libphonenumber (``phonenumbers``), its matcher run only on the numeric
runs' windows, with the rule's regions and leniency (see ``PhoneDetector``).

Not built: names and postal addresses. No well-kept offline library for them is installed
(spaCy/presidio models are not available here), and a word-list imitation would be guesswork.
"""

from __future__ import annotations

import ipaddress
import re
import string

import phonenumbers

from .base import Finding
from .prep import is_word_char, prepare

# ---------------------------------------------------------------------------------------------
# Email
# ---------------------------------------------------------------------------------------------

_EMAIL_AT = re.compile(r"@(?=[A-Za-z0-9])")  # literal first: the scan jumps from "@" to "@"
# The local part, read backwards from the "@": at most 64 characters (RFC 5321), so a long
# base64 blob that happens to contain "@" costs 64 characters, not the whole blob.
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*")
_EMAIL_LOCAL_CHARS = frozenset(string.ascii_letters + string.digits + "_%+-.")
_EMAIL_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9\-]|\.[A-Za-z0-9])"
)
# "logo@2x.png", "bundle@3.js": asset names, not addresses.
_FILE_EXTENSIONS = frozenset(
    {
        "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "js", "mjs",
        "cjs", "ts", "tsx", "jsx", "css", "scss", "less", "json", "yaml", "yml", "toml", "lock",
        "txt", "log", "md", "html", "htm", "xml", "exe", "dll", "bin", "zip", "tar", "gz", "tgz",
        "mp3", "mp4", "wav", "pdf",
    }
)  # fmt: skip


class EmailDetector:
    """RFC-ish addresses: dot-atom local part (no quoted forms), dotted domain, alphabetic TLD;
    trailing punctuation is never part of the match."""

    name = "email"

    def scan(self, text: str) -> list[Finding]:
        if "@" not in text:
            return []
        out: list[Finding] = []
        for at_match in _EMAIL_AT.finditer(text):
            at = at_match.start()
            if at == 0 or text[at - 1] not in _EMAIL_LOCAL_CHARS:
                continue
            floor = max(0, at - 65)
            start = at
            while start > floor and text[start - 1] in _EMAIL_LOCAL_CHARS:
                start -= 1
            if at - start > 64:
                continue  # a local part longer than 64 characters: a blob, not an address
            while text[start] == ".":
                start += 1
            if _EMAIL_LOCAL.fullmatch(text, start, at) is None:
                continue  # "a..b@x.com"
            if start > 0:
                before = text[start - 1]
                if before == "@":
                    continue  # "a@b@c.com"
                if before == "/" or (before == ":" and "://" in _token_before(text, start)):
                    continue  # URL user info: "https://user@host", "postgres://u:pw@host"
            if text[at - 1] == ".":
                continue
            domain = _EMAIL_DOMAIN.match(text, at + 1)
            if domain is None:
                continue
            end = domain.end()
            tld = text[text.rfind(".", at, end) + 1 : end].lower()
            if tld in _FILE_EXTENSIONS:
                continue
            if end < len(text) - 1 and text[end] == ":" and not text[end + 1].isspace():
                continue  # "git@github.com:org/repo.git" is an SSH address
            if end - start > 254:
                continue
            out.append(Finding(self.name, start, end))
        return out


def _token_before(text: str, pos: int) -> str:
    """The whitespace-delimited token that ends at ``pos`` (at most 200 characters back)."""
    lo = max(0, pos - 200)
    chunk = text[lo:pos]
    cut = max(chunk.rfind(" "), chunk.rfind("\n"), chunk.rfind("\t"))
    return chunk[cut + 1 :]


# ---------------------------------------------------------------------------------------------
# Phone numbers (Google's libphonenumber, the ``phonenumbers`` package)
# ---------------------------------------------------------------------------------------------

LENIENCIES = {
    "possible": phonenumbers.Leniency.POSSIBLE,
    "valid": phonenumbers.Leniency.VALID,
    "strict_grouping": phonenumbers.Leniency.STRICT_GROUPING,
    "exact_grouping": phonenumbers.Leniency.EXACT_GROUPING,
}
DEFAULT_PHONE_REGIONS = ("US", "GB", "FR", "DE")
# Characters around a numeric run that can still belong to its number: "+44", "(0121)",
# " ext. 2481", "x2481". The matcher sees the run plus this much on either side.
_PHONE_LEFT = 4
_PHONE_RIGHT = 16
_PHONE_MAX_TRIES = 64  # libphonenumber's cap on candidates per window (its default: 65535)
# An identifier right before a number says what it is: "order number is 5467404714",
# "Ticket 123-456-7890", "account 1234567890", "social security number 033039038". It must
# name the number: the last word before it, linking words aside ("customer record: …" is a
# record, not a customer number; "my details are …" names nothing).
_ID_WORDS = frozenset(
    {
        "order", "invoice", "ticket", "account", "acct", "ref", "reference", "serial", "sku",
        "isbn", "ean", "barcode", "tracking", "lot", "batch", "build", "version", "employee",
        "id", "iban", "bic", "routing", "case", "commit", "po", "customer", "membership",
        # national identifiers, several of them phone-shaped (NHS 3-3-4, SSN 9 digits)
        "ssn", "security", "insurance", "tax", "vat", "passport", "licence", "license", "nhs",
    }
)  # fmt: skip
# Words between a label and its number: "order number is …", "Kundennummer ist …".
_LINK_WORDS = frozenset(
    {"number", "no", "nr", "num", "is", "was", "are", "nummer", "ist", "numéro", "est"}
)
_LAST_WORDS = re.compile(r"[a-zäöüéèà]+")
# Words that say a number is a phone number (English, French, German).
_PHONE_WORDS = frozenset(
    {
        "phone", "telephone", "tel", "call", "mobile", "cell", "fax", "reach", "ring", "dial",
        "contact", "whatsapp", "sms", "téléphone", "portable", "appeler",
        "joindre", "telefon", "handy", "anrufen", "erreichen", "rufnummer",
    }
)  # fmt: skip
_PHONE_MAX_WINDOWS = 128  # runs checked with libphonenumber per text (~40 ms at most)
_MATCH_CACHE: dict[tuple[str, str, str], tuple[phonenumbers.PhoneNumberMatch, ...]] = {}
_MATCH_CACHE_SIZE = 4096  # windows are ≤ ~60 characters: well under a megabyte
_PHONE_PLUS_RUN = re.compile(r"\+\d[\d ().\-]{6,40}+")
_DIGITS = re.compile(r"\d+")
_IBAN_BEFORE = re.compile(r"[A-Z]{2}\d\d(?: [A-Z0-9]{4}){0,7} $")
# Written as people write phone numbers: "+…", "(0121) …", "(734)424-4399", a trunk-0 number
# in groups ("0113 496 0018", "07 88 35 33 74"), NANP 3-3-4 groups, or an extension. Such a
# number counts under ``valid`` leniency even where the numbering plan has not assigned it
# (made-up area codes, Ofcom's drama ranges): the person wrote a phone number.
_WRITTEN_AS_PHONE = re.compile(
    r"\(?\+.*|\(\d[\d ]*\).*|0\d{1,4}[ .\-/]\d[\d .\-]*\d"
    r"|(?:1[ .\-])?\d{3}[.\-]\d{3}[.\-]\d{4}|.*\d\s*(?:x|ext\.?|extension|#)\s*\d{1,6}",
    re.IGNORECASE,
)
# Shapes that are something else whatever a numbering plan says: a US SSN (123-45-6789), a
# date (05-14-2024, 2024.05.14), an IPv4 address (93.184.216.34).
_NOT_PHONE = re.compile(
    r"\d{3}([- ])\d{2}\1\d{4}|\d{1,2}([-./])\d{1,2}\2(?:19|20)\d\d|(?:19|20)\d\d([-./])\d\d\3\d\d"
    r"|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
)
# A run that starts with a full date is a date and a time ("2023-04-03 01:12"), not a phone.
_DATE_FIRST = re.compile(
    r"(?:\d{1,2}([-./])\d{1,2}\1(?:19|20)\d\d|(?:19|20)\d\d([-./])\d\d\2\d\d)(?!\d)"
)


_METADATA_LOADED = False


def _load_phone_metadata() -> None:
    """libphonenumber imports a country's metadata the first time a number of it is seen:
    load every country's once per process (~110 ms, ~1 MB) when a phone detector is built,
    off the hot path, so no request pays for an import on the event loop."""
    global _METADATA_LOADED
    if _METADATA_LOADED:
        return
    for region in phonenumbers.SUPPORTED_REGIONS:
        phonenumbers.PhoneMetadata.metadata_for_region(region)
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        phonenumbers.PhoneMetadata.metadata_for_nongeo_region(code)
    _METADATA_LOADED = True


def phone_regions_ok(regions: object) -> list[str]:
    """Region codes as libphonenumber knows them (``["US", "GB"]``); raises ``ValueError``
    with the unknown ones, so a rule with a typo fails when it is saved."""
    if isinstance(regions, str) or not isinstance(regions, (list, tuple)) or not regions:
        raise ValueError("regions: a non-empty list of ISO 3166 region codes, e.g. ['US', 'GB']")
    codes = [str(r).upper() for r in regions]
    unknown = sorted(set(codes) - phonenumbers.SUPPORTED_REGIONS)
    if unknown:
        raise ValueError(f"regions: unknown region codes {unknown}")
    return list(dict.fromkeys(codes))


def phone_leniency_ok(leniency: object) -> str:
    """One of :data:`LENIENCIES`' names, else ``ValueError``."""
    if leniency not in LENIENCIES:
        raise ValueError(f"leniency: one of {', '.join(LENIENCIES)}")
    return str(leniency)


class PhoneDetector:
    """Phone numbers as libphonenumber's ``PhoneNumberMatcher`` finds them: international
    ``+`` forms for every country always, national formats for the rule's ``regions`` (the
    countries whose numbers a deployment expects; default US, GB, FR, DE), extensions
    (``x2481``, ``ext. 2481``) included in the span. ``leniency`` is libphonenumber's:
    ``valid`` (default: the number is assigned in its country's numbering plan), ``possible``
    (only its length is plausible; more recall on made-up numbers, less precision),
    ``strict_grouping`` / ``exact_grouping`` (digits grouped as the country prints them).

    Cost: the matcher is pure Python (~100 µs a number), so it runs only on a window around
    each of the text's runs of 7+ digits-and-separators (``prep.py``), only for the regions
    whose format can start like the run, at most 64 candidates per window, memoised per
    window text (conversations are sent again every turn); past 128 runs in one text (a
    contact list) a run printed in a phone layout counts without libphonenumber's check.
    Precision beyond libphonenumber's own date/timestamp checks: a number right after an
    identifier word ("order number is …", "Ticket …") is that identifier, not a phone."""

    name = "phone"

    def __init__(
        self,
        *,
        regions: list[str] | tuple[str, ...] = DEFAULT_PHONE_REGIONS,
        leniency: str = "valid",
    ) -> None:
        self.regions = tuple(phone_regions_ok(regions))
        self.leniency_name = phone_leniency_ok(leniency)
        _load_phone_metadata()
        self._leniency = LENIENCIES[leniency]
        # "valid": libphonenumber's possible matches, kept if valid or written as a phone.
        valid = leniency == "valid"
        self._scan_leniency = LENIENCIES["possible"] if valid else self._leniency
        # National forms must start with the trunk prefix where the country's is "0" (GB, FR,
        # DE, …: "0631 435608"; a bare "4980274085941182" is not a German number). NANP
        # numbers are written without their "1", so the US has no such rule.
        self._trunk = {}
        self._idd = {}
        for region in self.regions:
            meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
            self._trunk[region] = meta.national_prefix == "0"
            idd = meta.preferred_international_prefix or meta.international_prefix or ""
            self._idd[region] = idd if idd.isdigit() else ""
        self._no_trunk = tuple(r for r in self.regions if not self._trunk[r])
        self._by_prefix: dict[str, tuple[str, ...]] = {}  # at most 10^4 keys

    def scan(self, text: str) -> list[Finding]:
        prepared = prepare(text)
        classes = prepared.classes
        lower = prepared.lower
        n = len(text)
        # Windows: [lo, hi, regions to try]. Runs that cannot be a phone number are dropped
        # before libphonenumber (~25 µs a parse, per region) sees them: too few digits, a date
        # / SSN / IPv4 shape, or an identifier word right before ("order 20240514-88231").
        # An international "+" number reads the same from every region (one pass); a national
        # one starting with 0 is only read by trunk-0 regions (and a region whose
        # international prefix it starts with), one starting with 1-9 only by the others.
        windows: list[tuple[int, int, int, tuple[str, ...]]] = []
        runs = prepared.numeric
        for k, (s, e) in enumerate(runs):
            if classes.count(b"0", s, e) < 7:
                continue  # no phone number has fewer than 7 digits (extensions come after)
            plus = s > 0 and text[s - 1] == "+" or (s > 1 and text[s - 2 : s] == "(+")
            if plus:
                regions = self.regions[:1]
            else:
                core = text[s:e].rstrip(" .-/()")
                if (
                    _NOT_PHONE.fullmatch(core)
                    or _DATE_FIRST.match(core)
                    or self._identifier_before(lower, s)
                ):
                    continue
                regions = self._regions_for(core[:8])
            # One window per run, never into the next run: a list of numbers is many small
            # windows, not one 64 KB text for the matcher.
            lo = max(runs[k - 1][1] if k else 0, s - _PHONE_LEFT)
            hi = min(runs[k + 1][0] if k + 1 < len(runs) else n, e + _PHONE_RIGHT)
            windows.append((s, lo, hi, regions))
        out: list[Finding] = []
        seen: set[tuple[int, int]] = set()
        for count, (s, lo, hi, regions) in enumerate(windows):
            chunk = text[lo:hi]
            if count >= _PHONE_MAX_WINDOWS:
                # A text made of numbers (a contact list): past this many runs, a run printed
                # in a phone layout counts without libphonenumber's check (~100 µs each).
                start = s - 1 if s and text[s - 1] in "+(" else s
                end = s + len(text[s:hi].split(",")[0].rstrip(" .-/(;:"))
                m = _WRITTEN_AS_PHONE.fullmatch(text, start, end)
                if m is not None and classes.count(b"0", m.start(), m.end()) >= 7:
                    span = (m.start(), m.end())
                    if span not in seen:
                        seen.add(span)
                        out.append(Finding(self.name, *span))
                continue
            here: list[Finding] = []
            for region in regions:
                for match in self._matches(chunk, region):
                    span = (lo + match.start, lo + match.end)
                    if span in seen or not self._accept(match, region, text, span):
                        continue  # another region may still read the same digits as a phone
                    seen.add(span)
                    # No identifier is written with the international "+".
                    if text[span[0]] == "+" or not self._identifier_before(lower, span[0]):
                        here.append(Finding(self.name, *span))
            if "+" in chunk:
                here.extend(self._plus_trimmed(text, lo, hi, here))
            out.extend(here)
        out.sort(key=lambda f: (f.start, f.end))
        return out

    def _plus_trimmed(self, text: str, lo: int, hi: int, found: list[Finding]) -> list[Finding]:
        """A "+" number the matcher skipped because more digit groups follow it ("+44 20
        7946 0958 2024"): drop trailing groups (at most three) until it is a valid number."""
        extra: list[Finding] = []
        for plus in _PHONE_PLUS_RUN.finditer(text, lo, hi):
            start = plus.start()
            if any(f.start <= start < f.end for f in found):
                continue
            if start and (text[start - 1].isalnum() or text[start - 1] in "+-."):
                continue
            groups = [g.end() for g in _DIGITS.finditer(text, start, plus.end())]
            for cut in groups[-2:-5:-1]:
                try:
                    number = phonenumbers.parse(text[start:cut], None)
                except phonenumbers.NumberParseException:
                    break
                if phonenumbers.is_valid_number(number):
                    extra.append(Finding(self.name, start, cut))
                    break
        return extra

    def _matches(self, chunk: str, region: str) -> tuple[phonenumbers.PhoneNumberMatch, ...]:
        """libphonenumber's matches in one window, memoised per process: a chat client sends
        the whole conversation again every turn, so the same numbers come back, and the
        matcher costs ~100 µs a number (its validity check walks the region's patterns)."""
        key = (chunk, region, self.leniency_name)
        found = _MATCH_CACHE.get(key)
        if found is None:
            matcher = phonenumbers.PhoneNumberMatcher(
                chunk, region, leniency=self._scan_leniency, max_tries=_PHONE_MAX_TRIES
            )
            found = tuple(matcher)
            if len(_MATCH_CACHE) >= _MATCH_CACHE_SIZE:
                _MATCH_CACHE.clear()
            _MATCH_CACHE[key] = found
        return found

    def _regions_for(self, digits: str) -> tuple[str, ...]:
        """The regions whose national (or international-prefix) form can start like
        ``digits``; the others would only produce matches that ``_plausible`` refuses."""
        if not digits.startswith("0"):
            return self._no_trunk
        compact = digits.replace(" ", "").replace("-", "")[:4]
        found = self._by_prefix.get(compact)
        if found is None:
            found = tuple(
                r
                for r in self.regions
                if self._trunk[r] or (self._idd[r] and compact.startswith(self._idd[r]))
            )
            self._by_prefix[compact] = found
        return found

    def _accept(
        self, match: phonenumbers.PhoneNumberMatch, region: str, text: str, span: tuple[int, int]
    ) -> bool:
        start, end = span
        raw = match.raw_string
        if sum(c.isdigit() for c in raw) < 7:
            return False  # "09/27": libphonenumber's shortest numbers are not what we look for
        before = text[start - 2 : start] if start >= 2 else " " + text[:start]
        after = text[end : end + 2]
        if before[-1:].isalnum() or after[:1].isalnum():
            return False  # inside a word or a hex token ("3fa85f64-5717-4562-b3fc")
        if before[-1:] in ("-", ".", ":", "/", "_") and before[:1].isalnum() and raw[0] != "+":
            return False  # the tail of a dashed / dotted token (IP, version, UUID)
        if after[:1] in ("-", ".", ":", "/", "_") and after[1:].isalnum():
            return False
        if before[-1:] == " " and before[:1].isdigit():
            return False  # the matcher split a longer run of digit groups (a card, an IBAN)
        if _IBAN_BEFORE.search(text, max(0, start - 45), start):
            return False  # the digits of a grouped IBAN ("IE39 VOSN 0316 5931 …")
        if not self._plausible(raw, region):
            return False
        if self._scan_leniency is self._leniency:
            return True
        number = match.number
        if phonenumbers.is_valid_number(number):
            return True
        if number.country_code == 1:
            national = str(number.national_number)
            if len(national) != 10 or national[0] in "01" or national[3] in "01":
                return False  # NANP: area code and exchange start with 2-9, always
        if _WRITTEN_AS_PHONE.fullmatch(raw):
            return True
        # A bare run of digits outside the numbering plan: only with a phone word near it.
        window = text[max(0, start - 40) : end + 30].lower()
        return not _PHONE_WORDS.isdisjoint(_LAST_WORDS.findall(window))

    def _plausible(self, raw: str, region: str) -> bool:
        """The numbering plan's word is not the last one: the written form must be how
        people write a phone number in that region (trunk prefix), not another shape."""
        bare = raw.strip("()")
        if _NOT_PHONE.fullmatch(bare) or _DATE_FIRST.match(bare):
            return False
        digits = raw.lstrip("(")
        if digits.startswith("+"):
            return True
        idd = self._idd[region]
        if idd and digits.startswith(idd):
            # "0044 20 7946 0958", "011 44 …"; unseparated, "0012345678901" is a padded id
            return not digits.isdigit()
        return not self._trunk[region] or digits.startswith("0")

    @staticmethod
    def _identifier_before(lower: str, start: int) -> bool:
        """Does the last word before ``start`` (linking words aside) name an identifier?"""
        words = _LAST_WORDS.findall(lower, max(0, start - 32), start)[-4:]
        while words and words[-1] in _LINK_WORDS:
            words.pop()
        return bool(words) and words[-1] in _ID_WORDS


# ---------------------------------------------------------------------------------------------
# Payment cards
# ---------------------------------------------------------------------------------------------

# A run of digit groups with single space/dash separators holding at least 13 digits.
_CARD_RUN = re.compile(r"(?<![\w.,\-])(?=\d(?:[ \-]?\d){11})\d+(?:[ \-]\d+)*")

_DIGIT_GROUP = re.compile(r"\d+")


def luhn_ok(digits: str) -> bool:
    """The Luhn mod-10 check every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_MAESTRO_12 = frozenset({5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763})


def _iin_ok(d: str) -> bool:
    """Does the issuer prefix exist for this length? (Visa, Mastercard, Amex, Discover, JCB,
    Diners, UnionPay, Maestro, Mir, RuPay.)"""
    n = len(d)
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB's registered range
        return 16 <= n <= 19
    if p2 == 35:
        # Outside JCB's registered range no issuer prints these, but a rule many libraries
        # publish for JCB is "35 + 14 digits" (some payment SDKs' brand checks, Faker's
        # generator), so numbers made by it end up in test data, logs and tickets. A DLP rule
        # should flag what a payment form would take as a card; a 16-digit Luhn-valid id
        # starting 35 is rare enough that precision does not pay for missing them.
        return n == 16
    if p4 in (1800, 2131):  # JCB's older 15-digit ranges
        return n == 15
    if 300 <= p3 <= 305 or p4 == 3095 or p2 in (36, 38, 39):
        return 14 <= n <= 19
    if p2 == 62 or 2200 <= p4 <= 2204:
        return 16 <= n <= 19
    if p2 in (50, 56, 57, 58, 63, 67) or p2 == 60 or p3 == 508:
        # Maestro (ISO/IEC 7812: 12-19 digits); 12 only for its own ranges, 5018/5020/...
        return 13 <= n <= 19 or (n == 12 and p4 in _MAESTRO_12)
    return False


def _card_shape_ok(lengths: list[int]) -> bool:
    """Printed layouts: one unbroken run, 4-4-4-4(-3), 4-4-4-1 (13-digit Visa), Amex 4-6-5,
    Diners 4-6-4. "1234 56 789012 3456" is a list of numbers, not a card."""
    if len(lengths) == 1:
        return True
    if lengths in ([4, 6, 5], [4, 6, 4]):
        return True
    return len(lengths) >= 3 and all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4


class CardDetector:
    """Payment card numbers: 12-19 digits (12: Maestro only), spaces/dashes in printed
    layouts, a real issuer prefix for the length, and the Luhn check (so most order numbers
    fail)."""

    name = "card"

    def scan(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        n = len(text)
        prepared = prepare(text)
        for s, e in prepared.numeric:
            if prepared.classes.count(b"0", s, e) < 12:
                continue
            out.extend(self._scan_span(text, s, min(n, e + 1)))
        return out

    def _scan_span(self, text: str, lo: int, hi: int) -> list[Finding]:
        out: list[Finding] = []
        for run in _CARD_RUN.finditer(text, lo, hi):
            if _IBAN_BEFORE.search(text, max(0, run.start() - 45), run.start()):
                continue  # the digits of a grouped IBAN ("DE70 5764 0127 …")
            groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(text, *run.span())]
            i = 0
            while i < len(groups):
                hit = self._card_at(text, groups, i)
                if hit is None:
                    i += 1
                    continue
                j = hit
                out.append(Finding(self.name, groups[i][0], groups[j - 1][1]))
                i = j
        return out

    @staticmethod
    def _card_at(text: str, groups: list[tuple[int, int]], i: int) -> int | None:
        """The end index (exclusive) of the longest card starting at group ``i``, if any."""
        first = groups[i][1] - groups[i][0]
        if first != 4 and not 12 <= first <= 19:
            return None
        best = None
        lengths: list[int] = []
        total = 0
        for j in range(i, min(len(groups), i + 5)):
            s, e = groups[j]
            if j > i and text[s - 1] != text[groups[i][1]]:
                break  # mixed separators: "4111 1111-1111 1111" is not how cards are printed
            lengths.append(e - s)
            total += e - s
            if total > 19:
                break
            if total >= 12 and _card_shape_ok(lengths):
                digits = text[groups[i][0] : e].replace(" ", "").replace("-", "")
                if _iin_ok(digits) and luhn_ok(digits):
                    best = j + 1
        return best


# ---------------------------------------------------------------------------------------------
# IBAN
# ---------------------------------------------------------------------------------------------

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
# Electronic form ("DE89370400440532013000") or printed in groups of four.
_IBAN_START = re.compile(rb"AA00")  # over the class string: two capitals, two digits
_IBAN = re.compile(
    r"[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?:[ ][A-Z0-9]{4}){2,7}(?:[ ][A-Z0-9]{1,3})?)"
    r"(?![A-Za-z0-9])"
)


def iban_ok(compact: str) -> bool:
    """ISO 13616 check: known country, its length, and mod-97 of the rearranged number is 1."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


class IbanDetector:
    """IBANs in upper case, compact or grouped by four: country length table plus mod-97."""

    name = "iban"

    def scan(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        classes = prepare(text).classes
        for start_match in _IBAN_START.finditer(classes):
            start = start_match.start()
            if start and classes[start - 1] in b"Aa0":
                continue
            m = _IBAN.match(text, start)
            if m is None:
                continue
            raw = m.group()
            length = IBAN_LENGTHS.get(raw[:2])
            if length is None:
                continue
            compact = raw.replace(" ", "")
            if len(compact) < length:
                continue
            end = m.end()
            if len(compact) > length:
                # Grouped IBAN followed by another 4-character word: cut at its real length.
                seen = 0
                for k, ch in enumerate(raw):
                    if ch != " ":
                        seen += 1
                        if seen == length:
                            end = m.start() + k + 1
                            break
                if end < len(text) and text[end] != " ":
                    continue
                compact = compact[:length]
            if iban_ok(compact):
                out.append(Finding(self.name, m.start(), end))
        return out


# ---------------------------------------------------------------------------------------------
# US Social Security numbers
# ---------------------------------------------------------------------------------------------

_SSN_DASHED = re.compile(r"(?<![\w\-])(\d{3})-(\d{2})-(\d{4})(?![\w\-]|\.\d)")
# Run over the lower-cased text (a case-insensitive pattern scans ~20x slower).
_SSN_CONTEXT = re.compile(
    r"(?:\bssn|social[\s-]+security(?:\s+(?:number|no\.?|#))?|\bss\s*(?:#|no\.|number))"
    r"(?:\W{0,3}(?:is|was|reads|:|=))?\W{0,6}"  # "My social security number is 123456789"
    r"(\d{3})[ ]?(\d{2})[ ]?(\d{4})(?!\w)"
)
_SSN_WORDS = frozenset({b"ssn", b"social", b"ss"})
# Published as examples so often that they are noise, not PII (the Woolworth wallet card).
_SSN_KNOWN_FAKE = frozenset({"078051120", "219099999"})


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    if area == "000" or area == "666" or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_KNOWN_FAKE


class SsnDetector:
    """US SSNs written ``AAA-GG-SSSS``, or with spaces / unseparated right after an "SSN" /
    "social security" label (a bare 9-digit number is too often something else)."""

    name = "us_ssn"

    def scan(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        prepared = prepare(text)
        n = len(text)
        classes = prepared.classes
        for s, e in prepared.numeric:
            if e - s >= 11 and classes.count(b"-", s, e) >= 2:
                for m in _SSN_DASHED.finditer(text, s, min(n, e + 2)):
                    if ssn_ok(*m.groups()):
                        out.append(Finding(self.name, m.start(), m.end()))
        if not _SSN_WORDS.isdisjoint(prepared.words):
            for m in _SSN_CONTEXT.finditer(prepared.lower):
                if ssn_ok(*m.groups()):
                    out.append(Finding(self.name, m.start(1), m.end(3)))
        return out


# ---------------------------------------------------------------------------------------------
# IP addresses
# ---------------------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?:[0-9A-Fa-f]{1,4}|(?=::))(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:]|\.\d)")
# Two colons at most four hex digits apart: where an IPv6 address must be (literal-led scan).
_IPV6_SPOT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:]*")
_VERSION_BEFORE = re.compile(
    r"(?i)(?:\bversions?|\bver\.?|\brelease|\bbuild|\bv|\bfirmware|\bsection|\bchapter"
    r"|\bclause|§)\s*$"
)
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _is_netmask(addr: ipaddress.IPv4Address) -> bool:
    n = int(addr)
    inverted = ~n & 0xFFFFFFFF
    return n >= 0xFF000000 and (inverted & (inverted + 1)) == 0


class IpAddressDetector:
    """IPv4 and IPv6 addresses, validated by ``ipaddress``.

    Choice: private (RFC 1918, ULA, link-local) addresses *count* by default, because an
    internal address leaks network layout, which is what a data-loss policy cares about;
    ``include_private=False`` turns them off. Never reported: loopback, the unspecified
    address, netmasks like 255.255.255.0, and dotted numbers right after "version"/"v"/
    "build"/"section" (``v1.2.3.4``). Three-part versions (``1.2.3``) are never candidates.
    """

    name = "ip_address"

    def __init__(self, *, include_private: bool = True) -> None:
        self.include_private = include_private

    def scan(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        n = len(text)
        prepared = prepare(text)
        for s, e in prepared.numeric:
            if prepared.classes.count(b".", s, e) < 3:
                continue
            for m in _IPV4.finditer(text, s, min(n, e + 2)):
                if self._v4_ok(text, m):
                    out.append(Finding(self.name, m.start(), m.end()))
        if ":" in text:
            out.extend(self._scan_v6(text))
        return out

    def _v4_ok(self, text: str, m: re.Match[str]) -> bool:
        try:
            addr = ipaddress.IPv4Address(m.group())
        except ValueError:
            return False
        if addr.is_loopback or addr.is_unspecified or _is_netmask(addr):
            return False
        if not self.include_private and addr.is_private:
            return False
        return not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start())

    def _scan_v6(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        pos = 0
        while (spot := _IPV6_SPOT.search(text, pos)) is not None:
            start = spot.start()
            floor = max(0, start - 40)
            while start > floor and text[start - 1] in _IPV6_CHARS:
                start -= 1
            if start and (is_word_char(text[start - 1]) or text[start - 1] == "."):
                pos = spot.end() - 1
                continue
            m = _IPV6.match(text, start)
            if m is None or m.end() <= spot.start():
                run = _IPV6_RUN.match(text, spot.start())
                pos = max(spot.end() - 1, run.end() if run else 0)
                continue
            pos = m.end()
            candidate = m.group()
            if sum(c in _HEX_DIGITS for c in candidate) < 4:
                continue
            if "::" not in candidate and max(len(g) for g in candidate.split(":")) < 3:
                continue  # "16:9:4:3:2:1:0:8" is a list of ratios, not an address
            try:
                addr = ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            if addr.is_loopback or addr.is_unspecified:
                continue
            if not self.include_private and (addr.is_private or addr.is_link_local):
                continue
            out.append(Finding(self.name, m.start(), m.end()))
        return out


PII_DETECTORS = {
    "email": EmailDetector,
    "phone": PhoneDetector,
    "card": CardDetector,
    "iban": IbanDetector,
    "us_ssn": SsnDetector,
    "ip_address": IpAddressDetector,
}
