"""Build the frozen held-out guardrail corpus (``apps/guardrails/heldout/*.jsonl``).

Why: the tuning corpus (``apps/guardrails/corpus/``) was written while the detectors were
tuned, so its scores flatter them. This corpus comes from generators nobody here tuned on:
Faker's locale providers (en_US, en_GB, fr_FR, de_DE) for PII, the credential formats'
published shapes for secrets, and Faker's numeric look-alikes for hard negatives. It is
seeded and deterministic; the committed ``.jsonl`` files are the frozen truth that tests
read. Rebuilding rewrites them (``--check`` only compares): never tune a detector on it.

Usage::

    .venv/bin/python scripts/build_heldout.py [--check] [--seed 18]

Needs Faker (the ``test`` extra). ``prompt_injection.jsonl`` is not built here.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from corpus_files import write_or_check
from faker import Faker

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "apps" / "guardrails" / "heldout"
LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE")
PER_FAMILY = 60  # positives per detector family
NEGATIVES = 160
FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)  # Faker's dates default to "now": not repeatable

Row = dict[str, object]

# Carrier sentences, written before any detector ran on them; "{}" is the value.
EN_TEMPLATES = (
    "You can reach me at {} if anything changes.",
    "Please update the customer record: {}",
    "{} is the number on file, can you confirm?",
    "Hi team, forwarding the details ({}) from yesterday's call.",
    "Contact: {}\nNotes: prefers mornings.",
    "The form says {} but I think that's outdated.",
    "ok so it's {} right?",
    "Ticket 4471 - customer wrote: 'my details are {}, please call back'",
)
FR_TEMPLATES = (
    "Vous pouvez me joindre au {} en semaine.",
    "Coordonnées du client : {}",
    "Merci de noter {} dans le dossier.",
)
DE_TEMPLATES = (
    "Sie erreichen mich unter {} ab 9 Uhr.",
    "Kontakt: {} (bitte nur werktags)",
    "Bitte {} im Kundenkonto hinterlegen.",
)


def _template(rng: random.Random, locale: str) -> str:
    pool = EN_TEMPLATES
    if locale == "fr_FR":
        pool = EN_TEMPLATES + FR_TEMPLATES * 2
    elif locale == "de_DE":
        pool = EN_TEMPLATES + DE_TEMPLATES * 2
    return rng.choice(pool)


def _sentence(fake: Faker, rng: random.Random, locale: str, value: str) -> str:
    """The value inside a carrier sentence, sometimes after a line of Faker filler text."""
    text = _template(rng, locale).format(value)
    if rng.random() < 0.3:
        text = f"{fake.sentence()} {text}"
    return text


def _german_phone(fake: Faker) -> str:
    """Faker's de_DE numbers are a trunk 0 plus random digits. A German area code never
    starts with 0 ("00" is the international dialling prefix), so such draws are redrawn:
    a fact of the numbering plan, not of any detector."""
    while True:
        number = fake.phone_number()
        national = number.split(")", 1)[-1] if number.startswith("+") else number
        digits = "".join(c for c in national if c.isdigit())
        if not digits.startswith("00"):
            return number


def _phone(fake: Faker, rng: random.Random, locale: str) -> str:
    if locale == "de_DE":
        return _german_phone(fake)
    if locale == "en_GB" and rng.random() < 0.3:
        return fake.cellphone_number()
    return fake.phone_number()


def build_pii(seed: int) -> dict[str, list[Row]]:
    """Per PII detector: Faker values in carrier sentences, cycling through the locales."""
    rng = random.Random(seed)
    fakes = {}
    for n, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed + n)
        fakes[locale] = fake
    us = fakes["en_US"]
    out: dict[str, list[Row]] = {k: [] for k in ("email", "phone", "card", "iban", "ip_address")}
    for i in range(PER_FAMILY):
        locale = LOCALES[i % len(LOCALES)]
        fake = fakes[locale]
        values: dict[str, tuple[str, str]] = {
            "email": (fake.email() if i % 3 else fake.free_email(), "email"),
            "phone": (_phone(fake, rng, locale), "phone_number"),
            "card": (fake.credit_card_number(), "credit_card_number"),
            "iban": (fake.iban(), "iban"),
            "ip_address": (fake.ipv6() if i % 4 == 3 else fake.ipv4_public(), "ipv4/ipv6"),
        }
        for family, (value, provider) in values.items():
            if family == "card" and i % 4 == 1:
                # Cards are printed in groups of four as often as not.
                value = " ".join(value[k : k + 4] for k in range(0, len(value), 4))
            if family == "iban" and i % 3 == 1:
                value = " ".join(value[k : k + 4] for k in range(0, len(value), 4))
            out[family].append(
                {
                    "text": _sentence(fake, rng, locale, value),
                    "labels": [family],
                    "source": f"faker:{locale}:{provider}",
                }
            )
    out["us_ssn"] = _build_ssn(us, rng)
    return out


SSN_PHRASES = (
    "My social security number is {}.",
    "SSN: {}",
    "ssn {}",
    "Social Security No. {} (on the W-2)",
    "Her SSN is {} and her DOB is on file.",
    "social security number {}",
    "SS# {}",
    "Applicant SSN - {}",
    "the social security # is {}",
    "Employee: Dana P., SSN {}, start date Monday",
)


def _build_ssn(fake: Faker, rng: random.Random) -> list[Row]:
    """Faker's SSNs (SSA-valid areas), dashed anywhere, or undashed / spaced after a phrase
    that names them (a bare 9-digit run is not an SSN to anyone)."""
    rows: list[Row] = []
    for i in range(PER_FAMILY):
        ssn = fake.ssn()
        form = i % 3
        if form == 0:
            text = _sentence(fake, rng, "en_US", ssn)
        else:
            value = ssn.replace("-", "") if form == 1 else ssn.replace("-", " ")
            text = rng.choice(SSN_PHRASES).format(value)
        rows.append({"text": text, "labels": ["us_ssn"], "source": "faker:en_US:ssn"})
    return rows


# --- secrets: the formats' documented shapes --------------------------------------------------

ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(rng: random.Random, fake: Faker) -> str:
    header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    payload = {
        "sub": str(fake.random_int(1000, 99999)),
        "name": fake.name(),
        "iat": fake.random_int(1_600_000_000, 1_800_000_000),
    }
    sig = bytes(rng.randrange(256) for _ in range(32 if header["alg"] == "HS256" else 64))
    return ".".join(
        (
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(payload, separators=(",", ":")).encode()),
            _b64url(sig),
        )
    )


# (label, generator, carrier): shapes from the vendors' documentation.
SecretGen = Callable[[random.Random, Faker], str]
SECRET_FORMATS: tuple[tuple[str, SecretGen, tuple[str, ...]], ...] = (
    (
        "secret.aws_access_key",  # AKIA/ASIA + 16 base32 characters
        lambda r, f: r.choice(["AKIA", "ASIA"]) + _rand(r, string.ascii_uppercase + "234567", 16),
        ("aws_access_key_id = {}", "export AWS_ACCESS_KEY_ID={}", "the key id is {} fyi"),
    ),
    (
        "secret.aws_secret_key",  # 40 characters of base64
        lambda r, f: _rand(r, ALNUM + "+/", 40),
        ("aws_secret_access_key = {}", "AWS_SECRET_ACCESS_KEY={}"),
    ),
    (
        "secret.github_token",  # ghp_/gho_/ghs_/ghu_ + 36; github_pat_ 22 _ 59
        lambda r, f: (
            r.choice(["ghp_", "gho_", "ghs_", "ghu_"]) + _rand(r, ALNUM, 36)
            if r.random() < 0.7
            else "github_pat_" + _rand(r, ALNUM, 22) + "_" + _rand(r, ALNUM, 59)
        ),
        ("git clone https://{}@github.com/acme/infra.git", "GITHUB_TOKEN={}", "token: {}"),
    ),
    (
        "secret.slack_token",  # xoxb-/xoxp- + team id - user id - secret
        lambda r, f: (
            f"{r.choice(['xoxb', 'xoxp'])}-{r.randrange(10**10, 10**12)}"
            f"-{r.randrange(10**10, 10**12)}-{_rand(r, ALNUM, 24)}"
        ),
        ("SLACK_BOT_TOKEN={}", "use {} for the bot", "slack token is {}"),
    ),
    (
        "secret.slack_webhook",
        lambda r, f: (
            "https://hooks.slack.com/services/T"
            + _rand(r, string.ascii_uppercase + string.digits, 8)
            + "/B"
            + _rand(r, string.ascii_uppercase + string.digits, 10)
            + "/"
            + _rand(r, ALNUM, 24)
        ),
        ("post alerts to {}", "webhook_url: {}"),
    ),
    (
        "secret.stripe_key",  # sk_live_ / rk_live_ + 24..99 alphanumerics
        lambda r, f: (
            r.choice(["sk_live_", "rk_live_", "sk_test_"]) + _rand(r, ALNUM, 24 + r.randrange(76))
        ),
        ("STRIPE_SECRET_KEY={}", "stripe.api_key = '{}'", "the stripe key {} leaked?"),
    ),
    (
        "secret.google_api_key",  # AIza + 35 base64url
        lambda r, f: "AIza" + _rand(r, B64URL, 35),
        ("GOOGLE_API_KEY={}", "maps key: {}"),
    ),
    (
        "secret.openai_key",
        lambda r, f: "sk-proj-" + _rand(r, B64URL, 48 + r.randrange(100)),
        ("OPENAI_API_KEY={}", 'client = OpenAI(api_key="{}")'),
    ),
    (
        "secret.anthropic_key",
        lambda r, f: "sk-ant-api03-" + _rand(r, B64URL, 93) + "AA",
        ("ANTHROPIC_API_KEY={}", "x-api-key: {}"),
    ),
    (
        "secret.jwt",
        _jwt,
        ("Authorization: Bearer {}", "the session cookie was {}", "id_token={}"),
    ),
    (
        "secret.private_key",
        lambda r, f: (
            "-----BEGIN "
            + r.choice(["RSA ", "EC ", "OPENSSH ", ""])
            + "PRIVATE KEY-----\n"
            + "\n".join(_rand(r, ALNUM + "+/", 64) for _ in range(4))
            + "\n-----END PRIVATE KEY-----"
        ),
        ("here is the deploy key:\n{}", "{}"),
    ),
    (
        "secret.connection_password",
        lambda r, f: (
            f"{r.choice(['postgres', 'postgresql', 'mysql', 'mongodb', 'redis', 'amqp'])}://"
            f"{f.user_name()}:{f.password(length=14, special_chars=False)}@{f.domain_name()}:"
            f"{r.choice([5432, 3306, 27017, 6379, 5672])}/{f.word()}"
        ),
        ("DATABASE_URL={}", "connect with {}"),
    ),
)


def build_secrets(seed: int) -> list[Row]:
    rng = random.Random(seed + 100)
    fake = Faker("en_US")
    fake.seed_instance(seed + 100)
    rows: list[Row] = []
    per = -(-PER_FAMILY * 2 // len(SECRET_FORMATS))  # ~120 secrets, every format
    for label, gen, carriers in SECRET_FORMATS:
        for _ in range(per):
            value = gen(rng, fake)
            rows.append(
                {
                    "text": rng.choice(carriers).format(value),
                    "labels": [label],
                    "source": f"format:{label.removeprefix('secret.')}",
                }
            )
    return rows


# --- hard negatives ---------------------------------------------------------------------------

NEGATIVE_TEMPLATES = (
    ("Order {} shipped on Tuesday.", lambda f, r: f.bothify("ORD-########")),
    ("Your order number is {}.", lambda f, r: str(f.random_number(digits=10, fix_len=True))),
    ("Invoice {} is overdue.", lambda f, r: f.bothify("INV-####-#####")),
    (
        "Upgraded to version {} last night.",
        lambda f, r: f"{r.randrange(1, 30)}.{r.randrange(0, 40)}.{r.randrange(0, 200)}",
    ),
    (
        "Build {} passed all checks.",
        lambda f, r: (
            f"{r.randrange(1, 9)}.{r.randrange(0, 20)}.{r.randrange(0, 99)}"
            f".{r.randrange(1000, 9999)}"
        ),
    ),
    ("The meeting is on {}.", lambda f, r: f.date(end_datetime=FIXED_NOW)),
    ("Timestamp {} in the log.", lambda f, r: f.iso8601(end_datetime=FIXED_NOW)),
    ("It costs {} including VAT.", lambda f, r: f.pricetag()),
    ("Barcode {} on the box.", lambda f, r: f.ean13()),
    ("ISBN {} is out of print.", lambda f, r: f.isbn13()),
    ("SKU {} is back in stock.", lambda f, r: f.bothify("??-####-####").upper()),
    ("Request id {}", lambda f, r: f.uuid4()),
    ("Commit {} fixed it.", lambda f, r: f.sha1()),
    ("sha256: {}", lambda f, r: f.sha256()),
    ("md5 {} matches.", lambda f, r: f.md5()),
    ("Tracking number {}", lambda f, r: f.bothify("1Z###########").upper()),
    ("Room {} then take the lift to floor {}.", None),
    (
        "Revenue was {} for the quarter.",
        lambda f, r: f"{r.randrange(1, 999)},{r.randrange(100, 999)},{r.randrange(100, 999)}",
    ),
    ("Ship to {}", lambda f, r: f.address().replace("\n", ", ")),
    ("Coordinates {}", lambda f, r: f"{f.latitude()}, {f.longitude()}"),
    ("Account ref {} (internal).", lambda f, r: f.bban() if hasattr(f, "bban") else f.ean8()),
    ("Postcode {} is outside the zone.", lambda f, r: f.postcode()),
    ("{} (population, 2021 census)", lambda f, r: f"{r.randrange(10**6, 10**9):,}"),
    ("Serial no. {}", lambda f, r: f.bothify("SN########-##")),
)


def build_negatives(seed: int) -> list[Row]:
    rng = random.Random(seed + 200)
    rows: list[Row] = []
    fakes = []
    for n, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed + 200 + n)
        fakes.append((locale, fake))
    for i in range(NEGATIVES):
        locale, fake = fakes[i % len(fakes)]
        template, gen = NEGATIVE_TEMPLATES[i % len(NEGATIVE_TEMPLATES)]
        if gen is None:
            text = template.format(rng.randrange(100, 999), rng.randrange(1, 30))
            source = "negative:room"
        else:
            text = template.format(gen(fake, rng))
            source = f"negative:faker:{locale}"
        rows.append({"text": text, "labels": [], "source": source})
    return rows


def build(seed: int) -> dict[str, list[Row]]:
    files = build_pii(seed)
    files["secrets"] = build_secrets(seed)
    files["negatives"] = build_negatives(seed)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    return write_or_check(build(args.seed), OUT_DIR, ROOT, check=args.check)


if __name__ == "__main__":
    raise SystemExit(main())
