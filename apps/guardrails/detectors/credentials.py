"""Secret detectors: known credential formats first, then a high-entropy heuristic.

One detector object (``secrets``) reports many finding names (``secret.aws_access_key``,
``secret.jwt``, …) so the entropy heuristic can stay quiet where a known format already matched:
one secret, one finding.

High-entropy choices (documented because they trade recall for precision):
- Candidates are base64/base64url-alphabet tokens of 24-256 characters. Longer runs are blobs
  (images, files, PEM bodies, which have their own detector), not credentials.
- Without context a token must mix upper case, lower case and digits, reach a length-dependent
  Shannon-entropy floor (about the 1st percentile of random base64 of that length) and break
  into many short case/digit segments (identifiers such as ``ThisIsMyVeryLongName2024`` and
  URL paths are a few long segments).
- Pure hex tokens (git SHAs, checksums, digests) and UUIDs never count on their own: hashes are
  everywhere in developer chat and are not secrets. They count when assigned to a secret-like
  name (``api_key = "…"``, ``Authorization: Bearer …``), as do other tokens of 16+ characters.
- Never on their own either: tokens inside ``data:…;base64,`` URIs or wrapped base64 blobs,
  base64 that decodes to readable text, SSH public keys, certificate/public-key PEM bodies,
  Stripe publishable keys (``pk_live_``), Subresource Integrity hashes (``sha384-…``), IPFS
  content ids and Bitcoin addresses (checked with their base58check checksum).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import Finding
from .prep import prepare


@dataclass(frozen=True, slots=True)
class _Format:
    """A known credential format, and how to find candidates without scanning the whole text
    with its regex (each full scan costs microseconds per 4 KB, even with a literal prefix):

    - ``needles``: the key is a base64(url) token, so it is one of the text's 16+ character
      tokens (``Prepared.tokens``, usually a handful); the pattern is matched where a needle
      occurs inside one.
    - ``contains`` / ``words``: the pattern scans the text only if a substring / a word is
      present.
    The boundary before a match is checked in Python (a leading lookbehind would make a scan
    try every character).
    """

    name: str
    pattern: re.Pattern[str]
    check: Callable[[re.Match[str]], bool] | None = None
    group: int = 0  # which group is the secret (connection strings: only the password)
    boundary: str = "A-Za-z0-9_-"  # characters that may not come right before the match
    words: tuple[bytes, ...] = ()  # if given, the regex runs only when one of them is a word
    lower: bool = False  # match against the lower-cased text (case-insensitive, still fast)
    scheme: bool = False  # a URL scheme must come right before the match ("postgres" + "://")
    needles: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()


def _expand(spec: str) -> str:
    """Every character a class spec such as ``A-Za-z0-9_-`` names (a tiny expander)."""
    chars = []
    i = 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            chars.extend(chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1))
            i += 3
        else:
            chars.append(spec[i])
            i += 1
    return "".join(chars)


def _mixed(body: str) -> bool:
    """Random keys mix classes; placeholders ("sk-your-key-here") and words do not."""
    return (
        any(c.isdigit() for c in body)
        and any(c.isupper() for c in body)
        and any(c.islower() for c in body)
    )


def _aws_secret_shape(body: str) -> bool:
    return _mixed(body) or (any(c.isdigit() for c in body) and ("/" in body or "+" in body))


def _check_openai(m: re.Match[str]) -> bool:
    body = m.group("body")
    return "T3BlbkFJ" in body or (len(body) >= 32 and _mixed(body))


def _check_not_placeholder(m: re.Match[str]) -> bool:
    """``AKIAXXXXXXXXXXXXXXXX`` is documentation: a real key id has many distinct characters."""
    return len(set(m.group()[4:])) >= 6


def _check_generic_mixed(m: re.Match[str]) -> bool:
    return _mixed(m.group())


def _b64url_json(part: str) -> object:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        return None


def _check_jwt(m: re.Match[str]) -> bool:
    header = _b64url_json(m.group("header"))
    if not isinstance(header, dict) or "alg" not in header:
        return False
    return isinstance(_b64url_json(m.group("payload")), dict)


_PLACEHOLDER = re.compile(
    r"(?i)^(?:\*+|x+|\.+|-+|_+|<[^>]*>|\$\{[^}]*\}|\$\w+|\{\{?[^}]*\}?\}|%\(?\w*\)?s|\[[^\]]*\]"
    r"|:\w+|pass|passwd|password|pwd|secret|changeme|your[_\-]?pass(?:word)?|mypassword"
    r"|yourpassword|<?redacted>?|\.\.\.|…)$"
)


def _check_url_password(m: re.Match[str]) -> bool:
    return _PLACEHOLDER.match(m.group("pw")) is None


_ADO_CONTEXT = re.compile(
    r"(?i)(?:server|host|data\s+source|user\s*id|uid|user(?:name)?|database|initial\s+catalog)"
    r"\s*="
)


def _check_ado_password(m: re.Match[str]) -> bool:
    """``Password=…;`` in an ADO.NET/ODBC string (a ";" and a server/user key nearby), or a
    ``?password=…`` / ``&password=…`` query parameter of a URL (JDBC and friends)."""
    if _PLACEHOLDER.match(m.group("pw")):
        return False
    text = m.string
    if (
        m.start()
        and text[m.start() - 1] in "?&"
        and "://" in text[max(0, m.start() - 300) : m.start()]
    ):
        return True
    lo, hi = max(0, m.start() - 200), min(len(text), m.end() + 200)
    return ";" in text[lo:hi] and _ADO_CONTEXT.search(text, lo, hi) is not None


_E = r"(?![A-Za-z0-9_\-])"  # token end

FORMATS: tuple[_Format, ...] = (
    _Format(
        "secret.aws_access_key",
        re.compile(r"A(?:KIA|SIA)[A-Z2-7]{16}(?![A-Za-z0-9])"),
        _check_not_placeholder,
        boundary="A-Za-z0-9",
        needles=("AKIA", "ASIA"),
    ),
    _Format(
        "secret.github_token",
        re.compile(r"gh[pousr]_[A-Za-z0-9]{36,251}" + _E),
        needles=("gh",),
    ),
    _Format(
        "secret.github_token",
        re.compile(r"github_pat_[A-Za-z0-9_]{50,240}" + _E),
        needles=("github_pat_",),
    ),
    _Format(
        "secret.slack_token",
        re.compile(r"xox[abposre]-\d[A-Za-z0-9\-]{10,250}" + _E),
        needles=("xox",),
    ),
    _Format(
        "secret.slack_webhook",
        re.compile(r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/\w{20,32}"),
        contains=("hooks.slack.com",),
    ),
    _Format(
        "secret.stripe_key",
        re.compile(r"sk_(?:live|test)_[A-Za-z0-9]{16,247}" + _E),
        _check_generic_mixed,
        needles=("sk_live_", "sk_test_"),
    ),
    _Format(
        "secret.stripe_key",
        re.compile(r"rk_(?:live|test)_[A-Za-z0-9]{16,247}" + _E),
        _check_generic_mixed,
        needles=("rk_live_", "rk_test_"),
    ),
    _Format(
        "secret.google_api_key",
        re.compile(r"AIza[0-9A-Za-z_\-]{35}" + _E),
        needles=("AIza",),
    ),
    _Format(
        "secret.anthropic_key",
        re.compile(r"sk-ant-(?:api|admin|oat|sid)\d\d-[A-Za-z0-9_\-]{32,300}" + _E),
        needles=("sk-ant-",),
    ),
    _Format(
        "secret.odock_key",
        re.compile(r"sk-odock-[A-Za-z0-9_\-]{32,64}" + _E),
        needles=("sk-odock-",),
    ),
    _Format(
        "secret.openai_key",
        re.compile(
            r"sk-(?!ant-|odock-)(?:(?:proj|svcacct|admin)-)?(?P<body>[A-Za-z0-9_\-]{20,300})" + _E
        ),
        _check_openai,
        needles=("sk-",),
    ),
    _Format(
        "secret.jwt",
        # The header is JSON starting '{"' (what every JWT library emits): base64url "eyJ".
        re.compile(
            r"(?P<header>eyJ[A-Za-z0-9_\-]{8,}+)\.(?P<payload>e[wy][A-Za-z0-9_\-]{4,}+)"
            r"\.[A-Za-z0-9_\-]*+(?![A-Za-z0-9_\-]|\.[A-Za-z0-9_\-])"
        ),
        _check_jwt,
        needles=("eyJ",),
    ),
    _Format(
        "secret.connection_password",
        # scheme://user:password@host — anchored at "://"; the scheme is checked in Python.
        re.compile(r"://[^\s:/@?#\[\]\"'<>]{0,128}:(?P<pw>[^\s@/?#\"'<>]{1,256})@[A-Za-z0-9\[_]"),
        _check_url_password,
        group=1,
        boundary="",
        scheme=True,
        contains=("://",),
    ),
    _Format(
        "secret.connection_password",
        re.compile(r"p(?:assword|wd)\s*=\s*(?P<pw>[^;&'\"\s]{1,256})(?=[;&'\"\s]|$)"),
        _check_ado_password,
        group=1,
        boundary="A-Za-z0-9_.",
        words=(b"password", b"pwd"),
        lower=True,
    ),
)
_BOUNDARIES = {f.boundary: frozenset(_expand(f.boundary)) for f in FORMATS}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{1,30}\Z")

_AWS_SECRET_CHARS = frozenset(_expand("A-Za-z0-9") + "/+")
_AWS_SECRET_CONTEXT = re.compile(
    r"(?:akia|asia)[a-z2-7]{16}|aws.{0,30}secret|secret.?access.?key", re.DOTALL
)  # over the lower-cased text
_PEM_BEGIN = re.compile(r"-----BEGIN (?P<kind>[A-Z0-9]+(?: [A-Z0-9]+)*)-----")
# The body of a PEM block that lost its END line: base64 lines and "Header: value" lines.
_PEM_BODY = re.compile(r"(?:[ \t]*\r?\n[ \t]*(?:[A-Za-z0-9+/=]{4,}+|[A-Za-z\-]+: [^\n]*))*+")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{32,}")
_SSH_PUBLIC_KEY = re.compile(r"(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-ssh-\S+)\s+$")
_WRAPPED_NEXT = re.compile(r"\r?\n[A-Za-z0-9+/=]{40,}")
_WRAPPED_LINE = re.compile(r"[ \t]*[A-Za-z0-9+/=]{40,}[ \t]*")

_HEX = re.compile(r"[0-9a-f]+|[0-9A-F]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SECRET_NAME_BEFORE = re.compile(  # over lower-cased text
    r"(?:api[_\-.]?key|apikey|secret|token|passw(?:or)?d|pwd|auth|access[_\-.]?key"
    r"|private[_\-.]?key|credentials?|signing[_\-.]?key)[A-Za-z0-9_\-]*[\"']?\s*(?:=>|:=|[:=])\s*"
    r"[\"'`]?$|(?:bearer|basic|token)\s+$"
)
# Public by design: Stripe publishable keys, Subresource Integrity hashes ("sha512-…").
_PUBLIC_PREFIXES = ("pk_live_", "pk_test_", "sha1-", "sha256-", "sha384-", "sha512-")
# (length, entropy floor): about the 1st percentile of random base64 of that length.
_ENTROPY_FLOOR = ((24, 3.85), (32, 4.15), (40, 4.4), (64, 4.85), (100, 5.2), (200, 5.55))
_MIN_TOKEN, _MAX_TOKEN = 24, 256


def shannon_entropy(token: str) -> float:
    """Bits per character of the token's own character distribution."""
    n = len(token)
    counts: dict[str, int] = {}
    for c in token:
        counts[c] = counts.get(c, 0) + 1
    return -sum(k / n * math.log2(k / n) for k in counts.values())


def _entropy_floor(n: int) -> float:
    prev_n, prev_h = _ENTROPY_FLOOR[0]
    if n <= prev_n:
        return prev_h
    for next_n, next_h in _ENTROPY_FLOOR[1:]:
        if n <= next_n:
            return prev_h + (next_h - prev_h) * (n - prev_n) / (next_n - prev_n)
        prev_n, prev_h = next_n, next_h
    return prev_h


def _segment_ratio(token: str) -> float:
    """Case/digit segments per character: "ThisIsMyLongName2024" is 5 segments in 20
    characters (0.25), random base64 about 0.55 (1st percentile ~0.38)."""
    return len(_SEGMENT.findall(token)) / len(token)


_SEGMENT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+|[^A-Za-z0-9]+")
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_IPFS_CID = re.compile(r"Qm[1-9A-HJ-NP-Za-km-z]{44}")


def _public_identifier(token: str) -> bool:
    """Random-looking but public: IPFS content ids, Bitcoin addresses (base58check)."""
    if _IPFS_CID.fullmatch(token):
        return True
    if not 26 <= len(token) <= 35 or token[0] not in "13":
        return False
    n = 0
    for c in token:
        i = _BASE58.find(c)
        if i < 0:
            return False
        n = n * 58 + i
    raw = n.to_bytes(25, "big") if n.bit_length() <= 200 else b""
    if not raw:
        return False
    digest = hashlib.sha256(hashlib.sha256(raw[:-4]).digest()).digest()
    return digest[:4] == raw[-4:]


def looks_random(token: str) -> bool:
    """The no-context rule: long, mixed classes, high entropy, many short segments, and not a
    known kind of public identifier."""
    core = token.rstrip("=")
    n = len(core)
    if not _MIN_TOKEN <= n <= _MAX_TOKEN or not _mixed(core):
        return False
    if _HEX.fullmatch(core) or _UUID.fullmatch(core):
        return False
    if _segment_ratio(core) < 0.32 or shannon_entropy(core) < _entropy_floor(n):
        return False
    return not _public_identifier(core)


def _encoded_text(token: str) -> bool:
    """base64 of readable text ("SGVsbG8gd29ybGQ…") is an encoding, not a key: keys decode to
    bytes that are not text. (With a secret-like name before it, it still counts.)"""
    core = token.rstrip("=")
    if len(core) % 4 == 1:
        return False
    try:
        raw = base64.b64decode(core + "=" * (-len(core) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        return False
    if not raw:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in raw)
    return printable / len(raw) > 0.95


def _assigned_secret(token: str) -> bool:
    """The with-context rule (``token = "…"``): 16+ characters, some digits, some letters,
    not a placeholder, 3 bits/char or more (a hex secret has at most 4)."""
    core = token.rstrip("=")
    if not 16 <= len(core) <= _MAX_TOKEN or _PLACEHOLDER.match(core):
        return False
    if not any(c.isdigit() for c in core) or not any(c.isalpha() for c in core):
        return False
    return shannon_entropy(core) >= 3.0


class SecretsDetector:
    """Known credential formats (AWS, GitHub, Slack, Stripe, Google, OpenAI, Anthropic, Odock
    keys, PEM private keys, JWTs, passwords in connection strings) plus high-entropy tokens."""

    name = "secrets"

    def __init__(self, *, high_entropy: bool = True) -> None:
        self.high_entropy = high_entropy

    def scan(self, text: str) -> list[Finding]:
        prepared = prepare(text)
        out: list[Finding] = []
        for spec in FORMATS:
            if spec.needles:
                if prepared.tokens:
                    out.extend(_token_matches(spec, text, prepared.tokens))
                continue
            subject = prepared.lower if spec.lower else text
            if spec.words and prepared.words.isdisjoint(spec.words):
                continue
            if spec.contains and not any(c in text for c in spec.contains):
                continue
            for m in spec.pattern.finditer(subject):
                found = _accept(spec, text, m)
                if found is not None:
                    out.append(found)
        lower = prepared.lower
        if (
            prepared.tokens
            and any(end - start == 40 for start, end in prepared.tokens)
            and (_AWS_SECRET_CONTEXT.search(lower))
        ):
            out.extend(self._aws_secrets(text, lower, prepared.tokens))
        pem = _pem_blocks(text) if "-----BEGIN " in text else []
        for kind, start, stop in pem:
            if not (kind.endswith("PRIVATE KEY") or kind.endswith("PRIVATE KEY BLOCK")):
                continue
            if _BASE64_RUN.search(text, start + len(kind) + 16, stop) is None:
                continue  # a header quoted in prose, no key material after it
            out.append(Finding("secret.private_key", start, stop))
        if self.high_entropy and prepared.tokens:
            skip = out + [Finding("pem", start, stop) for _, start, stop in pem]
            out.extend(self._high_entropy(text, prepared.tokens, skip))
        return out

    @staticmethod
    def _aws_secrets(text: str, lower: str, tokens: Sequence[tuple[int, int]]) -> list[Finding]:
        """40-character AWS secret access keys, only within 300 characters of an access key id
        or an "aws … secret" label: on their own they are indistinguishable from other base64."""
        found = []
        for start, end in tokens:
            if end - start != 40:
                continue
            token = text[start:end]
            if not all(c in _AWS_SECRET_CHARS for c in token) or not _aws_secret_shape(token):
                continue
            lo, hi = max(0, start - 300), min(len(text), end + 300)
            if _AWS_SECRET_CONTEXT.search(lower, lo, hi):
                found.append(Finding("secret.aws_secret_key", start, end))
        return found

    @staticmethod
    def _high_entropy(
        text: str, tokens: Sequence[tuple[int, int]], known: list[Finding]
    ) -> list[Finding]:
        found = []
        for start, end in tokens:
            if any(f.start < end and start < f.end for f in known):
                continue
            if text.endswith("base64,", 0, start) or _is_wrapped_blob(text, start, end):
                continue
            token = text[start:end]
            if token.startswith(_PUBLIC_PREFIXES):
                continue
            random_looking = looks_random(token) and not _encoded_text(token)
            if not random_looking and not _assigned_secret(token):
                continue
            before = text[max(0, start - 60) : start]
            if ("ssh-" in before or "ecdsa-" in before) and _SSH_PUBLIC_KEY.search(before):
                continue
            if random_looking or _SECRET_NAME_BEFORE.search(before.lower()):
                found.append(Finding("secret.high_entropy", start, end))
        return found


def _accept(spec: _Format, text: str, m: re.Match[str]) -> Finding | None:
    start = m.start()
    if start and text[start - 1] in _BOUNDARIES[spec.boundary]:
        return None
    if spec.scheme and not _SCHEME.search(text, max(0, start - 32), start):
        return None
    if spec.check is not None and not spec.check(m):
        return None
    if spec.needles and len(set(m.group())) < 8:
        return None  # "ghp_xxxxxxxx…", "sk-ant-api03-000…": documentation placeholders
    return Finding(spec.name, m.start(spec.group), m.end(spec.group))


def _token_matches(spec: _Format, text: str, tokens: Sequence[tuple[int, int]]) -> list[Finding]:
    """Try the pattern where one of its needles occurs inside a token."""
    found = []
    for start, end in tokens:
        token = text[start:end]
        for needle in spec.needles:
            i = token.find(needle)
            while i >= 0:
                m = spec.pattern.match(text, start + i)
                if m is not None:
                    hit = _accept(spec, text, m)
                    if hit is not None:
                        found.append(hit)
                i = token.find(needle, i + 1)
    return found


def _pem_blocks(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every PEM block: header to footer, or, when the footer is missing
    (a paste cut short), header to the end of its base64 body."""
    blocks = []
    pos = 0
    no_footer: set[str] = set()  # kinds whose footer is absent from here on: never search twice
    while (m := _PEM_BEGIN.search(text, pos)) is not None:
        footer = f"-----END {m.group('kind')}-----"
        end = -1 if footer in no_footer else text.find(footer, m.end())
        if end < 0:
            no_footer.add(footer)
        if end >= 0:
            stop = end + len(footer)
        else:
            body = _PEM_BODY.match(text, m.end())
            stop = body.end() if body else m.end()
        blocks.append((m.group("kind"), m.start(), stop))
        pos = stop
    return blocks


def _is_wrapped_blob(text: str, start: int, end: int) -> bool:
    """A line of a base64 blob wrapped at 64/76 columns (MIME, PEM-like dumps): the line next
    to it is base64 of 40+ characters too."""
    if _WRAPPED_NEXT.match(text, end):
        return True
    if start < 2 or text[start - 1] != "\n":
        return False
    stop = start - 2 if text[start - 2] == "\r" else start - 1
    line_start = text.rfind("\n", 0, stop) + 1
    return _WRAPPED_LINE.fullmatch(text, line_start, stop) is not None
