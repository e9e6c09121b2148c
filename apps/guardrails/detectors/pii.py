"""PII detectors: email, phone, payment card, IBAN, US SSN, IP address.

Finding candidates is kept cheap and linear: email and international phone numbers start
from literal "@" / "+" scans; everything numeric (cards, SSNs, national phone formats, IPv4)
is only looked for inside the text's runs of 7+ digits-and-separators, found once per text on
a byte class string (``prep.py``); IBANs start where the class string has two capitals and two
digits. Candidates are then *validated* (Luhn and issuer prefixes, IBAN length table and
mod-97, SSA rules, ``ipaddress``, per-country digit counts), because a loose regex on a hot
path produces more noise than signal.

Phone numbers: the ``phonenumbers`` library is not installed and no dependency may be added,
so they are a careful regex per format plus digit-count validation (see ``PhoneDetector``).

Not built: names and postal addresses. No well-kept offline library for them is installed
(spaCy/presidio models are not available here), and a word-list imitation would be guesswork.
"""

from __future__ import annotations

import ipaddress
import re
import string

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
# Phone numbers (no `phonenumbers` library here: a regex per format plus digit-count checks)
# ---------------------------------------------------------------------------------------------

# ITU country calling codes (prefix-free, so the first 1-3 digits after "+" name the country).
_CALLING_CODES = frozenset(
    {
        "1", "7", "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44",
        "45", "46", "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61",
        "62", "63", "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95",
        "98", "211", "212", "213", "216", "218", "220", "221", "222", "223", "224", "225", "226",
        "227", "228", "229", "230", "231", "232", "233", "234", "235", "236", "237", "238", "239",
        "240", "241", "242", "243", "244", "245", "246", "247", "248", "249", "250", "251", "252",
        "253", "254", "255", "256", "257", "258", "260", "261", "262", "263", "264", "265", "266",
        "267", "268", "269", "290", "291", "297", "298", "299", "350", "351", "352", "353", "354",
        "355", "356", "357", "358", "359", "370", "371", "372", "373", "374", "375", "376", "377",
        "378", "380", "381", "382", "383", "385", "386", "387", "389", "420", "421", "423", "500",
        "501", "502", "503", "504", "505", "506", "507", "508", "509", "590", "591", "592", "593",
        "594", "595", "596", "597", "598", "599", "670", "672", "673", "674", "675", "676", "677",
        "678", "679", "680", "681", "682", "683", "685", "686", "687", "688", "689", "690", "691",
        "692", "850", "852", "853", "855", "856", "880", "886", "960", "961", "962", "963", "964",
        "965", "966", "967", "968", "970", "971", "972", "973", "974", "975", "976", "977", "992",
        "993", "994", "995", "996", "998",
    }
)  # fmt: skip
# National significant number lengths (min, max) for big countries; others get (7, 12).
_NATIONAL_LENGTHS = {
    "1": (10, 10),
    "7": (10, 10),
    "20": (9, 10),
    "27": (9, 9),
    "31": (9, 9),
    "32": (8, 9),
    "33": (9, 9),
    "34": (9, 9),
    "39": (6, 11),
    "41": (9, 9),
    "44": (9, 10),
    "45": (8, 8),
    "46": (7, 10),
    "47": (8, 8),
    "48": (9, 9),
    "49": (6, 13),
    "52": (10, 10),
    "55": (10, 11),
    "61": (9, 9),
    "62": (8, 12),
    "63": (8, 10),
    "64": (8, 10),
    "65": (8, 8),
    "81": (9, 10),
    "82": (8, 10),
    "86": (10, 11),
    "90": (10, 10),
    "91": (10, 10),
    "92": (9, 10),
    "234": (8, 10),
    "353": (7, 9),
    "971": (8, 9),
    "972": (8, 9),
}
_DEFAULT_NATIONAL = (7, 12)

# "+44 20 7946 0958", "+1 (415) 555-2671", "+33 6 12 34 56 78", "+49 (0)30 1234567",
# "0044 20 7946 0958": a possessive run of digits, spaces, dots, dashes and parentheses (linear
# time), cut and checked in Python by `_international_end`.
_PHONE_PLUS = re.compile(r"\+[\d ().\-]{6,40}+")
_PHONE_00 = re.compile(r"00[\d ().\-]{6,40}+")
_PHONE_GROUP = re.compile(r"\d+")
_PHONE_SEPARATORS = frozenset({" ", "-", ".", "(", ")", " (", ") ", ")-", ")."})
# US/Canada with separators: "(415) 555-2671", "415-555-2671", "415.555.2671", "1-800-555-0199".
_PHONE_NANP = re.compile(
    r"(?<![\w+\-./])(?<!\d[ ])(?:1[ .\-])?(?:\([2-9]\d\d\)[ ]?|[2-9]\d\d([ .\-]))"
    r"[2-9]\d\d[ .\-]\d{4}(?!\w|[ .\-/]?\d)"
)
# France: "06 12 34 56 78", "01.23.45.67.89" (one separator throughout).
_PHONE_FR = re.compile(r"(?<![\w+\-./])(?<!\d[ ])0[1-9]([ .\-])\d\d(?:\1\d\d){3}(?!\w|[ .\-/]?\d)")
# UK/Germany trunk-0 forms: "020 7946 0958", "07700 900123", "(030) 1234567", "0151 23456789".
_PHONE_TRUNK = re.compile(
    r"(?<![\w+\-./])(?<!\d[ ])(?:\(0[1-9]\d{1,3}\)[ ]?|0[1-9]\d{1,3}[ \-/])\d{3,8}"
    r"(?:[ \-]\d{3,4})?(?!\w|[ .\-/]?\d)"
)


def _international_end(text: str, start: int, end: int) -> int | None:
    """Where the international number starting at ``start`` ends, or None when the candidate
    is not one: separators as people print them, 8-15 digits, a real calling code and a
    national number of a plausible length for that country. Trailing groups are dropped while
    there are too many digits ("+44 20 7946 0958 2024")."""
    raw = text[start:end]
    plus = raw[0] == "+"
    groups = [(g.start(), g.end()) for g in _PHONE_GROUP.finditer(raw)]
    # The "(0)" trunk marker of "+44 (0)20 ..." is printed but not dialled.
    keep: list[tuple[int, int]] = []
    for s, e in groups:
        if e - s == 1 and raw[s] == "0" and raw[s - 1 : s] == "(" and raw[e : e + 1] == ")":
            continue
        keep.append((s, e))
    if not keep:
        return None
    if not plus:
        first_s, first_e = keep[0]
        if first_e - first_s < 3:
            return None
        keep[0] = (first_s + 2, first_e)  # the "00" international prefix
        if len(keep) < 2:
            return None  # "0012345678901" is an order number, not "+1 234 567 8901"
    for count in range(len(keep), 0, -1):
        window = keep[:count]
        ok = True
        for (_, e1), (s2, _) in zip(window, window[1:], strict=False):
            sep = raw[e1:s2].replace("(0)", "").replace("  ", " ")
            if sep not in _PHONE_SEPARATORS:
                ok = False
                break
        if not ok:
            continue
        digits = "".join(raw[s:e] for s, e in window)
        if len(digits) > 15:
            continue
        if not _international_digits_ok(digits):
            return None
        stop = window[-1][1]
        if raw[stop : stop + 1] == ")":
            stop += 1
        after = start + stop
        if after < len(text) and (text[after].isalnum() or text[after] == "_"):
            return None
        return after
    return None


def _international_digits_ok(digits: str) -> bool:
    if not 8 <= len(digits) <= 15:
        return False
    for size in (1, 2, 3):
        code = digits[:size]
        if code in _CALLING_CODES:
            lo, hi = _NATIONAL_LENGTHS.get(code, _DEFAULT_NATIONAL)
            national = digits[size:]
            if not lo <= len(national) <= hi:
                return False
            if code == "1":  # NANP: area code and exchange start with 2-9
                return national[0] not in "01" and national[3] not in "01"
            return True
    return False


class PhoneDetector:
    """International ``+``/``00`` forms for any calling code (digit counts checked per country
    for the big ones, E.164's 15-digit cap for all), plus separated national formats for
    US/Canada, UK, France and Germany. A bare digit run is never a phone number: too many
    order numbers look like one."""

    name = "phone"

    def scan(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        if "+" in text:
            for m in _PHONE_PLUS.finditer(text):
                start = m.start()
                if start and (is_word_char(text[start - 1]) or text[start - 1] in "+-."):
                    continue
                end = _international_end(text, start, m.end())
                if end is not None:
                    out.append(Finding(self.name, start, end))
        n = len(text)
        prepared = prepare(text)
        for s, e in prepared.numeric:
            if prepared.classes.count(b"0", s, e) < 8 or (s and text[s - 1] == "+"):
                continue  # every phone number has 8+ digits; "+…" was handled above
            if s and text[s - 1] == "(":
                s -= 1
            stop = min(n, e + 2)
            if text.startswith("00", s):
                before = text[max(0, s - 2) : s]
                ok = not (s and (is_word_char(text[s - 1]) or text[s - 1] in "+-."))
                if ok and not (len(before) == 2 and before[0].isdigit()):
                    m = _PHONE_00.match(text, s)
                    end = _international_end(text, s, m.end()) if m else None
                    if end is not None:
                        out.append(Finding(self.name, s, end))
                        continue
            if prepared.classes.count(b"0", s, e) < 10:
                continue
            for pattern in (_PHONE_NANP, _PHONE_FR, _PHONE_TRUNK):
                for m in pattern.finditer(text, s, stop):
                    if pattern is _PHONE_TRUNK:
                        digits = sum(c.isdigit() for c in m.group())
                        if not 10 <= digits <= 12:
                            continue
                    out.append(Finding(self.name, m.start(), m.end()))
        return out


# ---------------------------------------------------------------------------------------------
# Payment cards
# ---------------------------------------------------------------------------------------------

# A run of digit groups with single space/dash separators holding at least 13 digits.
_CARD_RUN = re.compile(r"(?<![\w.,\-])(?=\d(?:[ \-]?\d){12})\d+(?:[ \-]\d+)*")
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
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p4 == 3095 or p2 in (36, 38, 39):
        return 14 <= n <= 19
    if p2 == 62 or 2200 <= p4 <= 2204:
        return 16 <= n <= 19
    if p2 in (50, 56, 57, 58, 63, 67) or p2 == 60 or p3 == 508:
        return 13 <= n <= 19
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
    """Payment card numbers: 13-19 digits, spaces/dashes in printed layouts, a real issuer
    prefix for the length, and the Luhn check (so most order numbers fail)."""

    name = "card"

    def scan(self, text: str) -> list[Finding]:
        out: list[Finding] = []
        n = len(text)
        prepared = prepare(text)
        for s, e in prepared.numeric:
            if prepared.classes.count(b"0", s, e) < 13:
                continue
            out.extend(self._scan_span(text, s, min(n, e + 1)))
        return out

    def _scan_span(self, text: str, lo: int, hi: int) -> list[Finding]:
        out: list[Finding] = []
        for run in _CARD_RUN.finditer(text, lo, hi):
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
        if first != 4 and not 13 <= first <= 19:
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
            if total >= 13 and _card_shape_ok(lengths):
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
    r"(?:\bssn|social\s+security(?:\s+(?:number|no\.?|#))?|\bss\s*(?:#|no\.|number))\W{0,6}"
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
