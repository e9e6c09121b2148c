"""Build the second frozen held-out guardrail corpus (``apps/guardrails/heldout2/*.jsonl``).

Why: the first held-out corpus (``apps/guardrails/heldout/``, from Faker) had its phone and
card misses looked at while those detectors were fixed, so its phone and card rows no longer
measure generalisation. This corpus comes from a different third-party generator, Mimesis
(MIT), in its ``en`` (US), ``en-gb``, ``fr`` and ``de`` locales, with carrier sentences and
hard negatives written for it and for nothing else. It was built and committed before any
detector ran on it; the committed ``.jsonl`` files are the frozen truth that tests read.
Rebuilding rewrites them (``--check`` only compares): never tune a detector on it.

Usage::

    .venv/bin/python scripts/build_heldout2.py [--check] [--seed 1802]

Needs Mimesis (pinned in the ``test`` extra: its data files are the source, so a different
version is a different corpus).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

from corpus_files import write_or_check
from mimesis import Generic, Locale
from mimesis.enums import CardType, TimestampFormat

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "apps" / "guardrails" / "heldout2"
LOCALES = (Locale.EN, Locale.EN_GB, Locale.FR, Locale.DE)
PHONES = 120  # the two families this corpus exists for get the most lines
CARDS = 90
EMAILS = 40
NEGATIVES = 200
YEARS = {"start": 2001, "end": 2025}  # Mimesis's date defaults end at "this year": not repeatable

Row = dict[str, object]

# Carrier sentences, written for this corpus before any detector ran on it; "{}" is the value.
# Half name what the value is, half do not (a detector must not need the word).
EN_PHONE = (
    "Call me back on {} when you get a minute.",
    "Best number to reach the site manager: {}",
    "Delivery driver left a note - ring {} on arrival.",
    "{} (mobile, after 6pm)",
    "Can you add {} to the emergency contact sheet?",
    "her new one is {} apparently",
    "Out of office. For urgent matters please dial {} instead.",
    "Name: R. Okafor | Tel: {} | Dept: Procurement",
    "I tried {} twice and it went straight to voicemail.",
    "The caller ID showed {} - do we know who that is?",
)
FR_PHONE = (
    "Rappelez-moi au {} demain matin.",
    "Le standard est joignable au {} du lundi au vendredi.",
    "Tél. : {} (portable)",
    "Son numéro a changé, c'est maintenant le {}.",
)
DE_PHONE = (
    "Rufen Sie bitte unter {} zurück.",
    "Telefon: {} - Durchwahl Vertrieb",
    "Die neue Nummer lautet {}.",
    "Bei Rückfragen erreichen Sie uns unter {}.",
)
EN_CARD = (
    "Please charge the balance to {} and email the receipt.",
    "Card on file: {}, exp. next year.",
    "customer read out {} over the phone, is that safe to store?",
    "Refund to the original payment method ({}) requested.",
    "I paid with {} but the booking shows unpaid.",
    "{} was declined at checkout twice.",
    "Billing - PAN {} - dispute opened",
    "Use the corporate card {} for the venue deposit.",
)
FR_CARD = (
    "Le paiement a été fait avec la carte {}.",
    "Numéro de carte : {} (à débiter le 5)",
)
DE_CARD = (
    "Bitte buchen Sie den Betrag von der Karte {} ab.",
    "Kreditkarte: {} - Zahlung offen",
)
EN_EMAIL = (
    "Send the signed copy to {} please.",
    "cc {} on the next update",
    "From: {}\nSubject: re: renewal",
    "Her login was {} until the migration.",
)
FR_EMAIL = ("Écrivez-nous à {} pour toute question.",)
DE_EMAIL = ("Antwort bitte an {} senden.",)
CARRIERS = {
    "phone": (EN_PHONE, FR_PHONE, DE_PHONE),
    "card": (EN_CARD, FR_CARD, DE_CARD),
    "email": (EN_EMAIL, FR_EMAIL, DE_EMAIL),
}


def _carrier(rng: random.Random, family: str, locale: Locale) -> str:
    en, fr, de = CARRIERS[family]
    pool = en
    if locale is Locale.FR:
        pool = en + fr * 2
    elif locale is Locale.DE:
        pool = en + de * 2
    return rng.choice(pool)


def _sentence(g: Generic, rng: random.Random, family: str, locale: Locale, value: str) -> str:
    """The value inside a carrier sentence, sometimes after a Mimesis sentence of filler."""
    text = _carrier(rng, family, locale).format(value)
    if rng.random() < 0.3:
        text = f"{g.text.sentence()} {text}"
    return text


def _national_significant_part(number: str) -> str:
    """The digits after the country code (``+1``, ``+44``, ``+33``, ``+49``) or after the
    trunk ``0`` of a national form."""
    digits = "".join(c for c in number if c.isdigit())
    if number.lstrip().startswith("+"):
        for code in ("1", "44", "33", "49"):
            if digits.startswith(code):
                return digits[len(code) :]
        return digits
    return digits[1:] if digits.startswith("0") else digits


def _phone(g: Generic) -> str:
    """A number exactly as Mimesis prints it for the locale. One rule, a fact of the four
    numbering plans decided before any detector ran (as for the first held-out corpus): no
    national significant number starts with 0 — ``0`` is the trunk prefix and ``00`` the
    international one — so Mimesis's random digits that make one (``+49-0###-…``,
    ``(00###) …``, ``+44 0# …``) are drawn again."""
    while True:
        number = g.person.phone_number()
        if not _national_significant_part(number).startswith("0"):
            return number


CARD_TYPES = (CardType.VISA, CardType.MASTER_CARD, CardType.AMERICAN_EXPRESS)


def build_positives(seed: int) -> dict[str, list[Row]]:
    """Phone, card and email lines, cycling through the four locales."""
    rng = random.Random(seed)
    gens = {loc: Generic(locale=loc, seed=seed + n) for n, loc in enumerate(LOCALES)}
    out: dict[str, list[Row]] = {"phone": [], "card": [], "email": []}
    for i in range(PHONES):
        loc = LOCALES[i % len(LOCALES)]
        g = gens[loc]
        out["phone"].append(
            {
                "text": _sentence(g, rng, "phone", loc, _phone(g)),
                "labels": ["phone"],
                "source": f"mimesis:{loc.value}:person.phone_number",
            }
        )
    for i in range(CARDS):
        loc = LOCALES[i % len(LOCALES)]
        g = gens[loc]
        kind = CARD_TYPES[i % len(CARD_TYPES)]
        value = g.payment.credit_card_number(kind)  # printed grouped: "4455 5299 1152 2450"
        if (i // 3) % 3 == 2:  # a third of each type, in whole cycles of the three types
            value = value.replace(" ", "")  # as a form field stores it
        out["card"].append(
            {
                "text": _sentence(g, rng, "card", loc, value),
                "labels": ["card"],
                "source": f"mimesis:{loc.value}:payment.credit_card_number:{kind.name.lower()}",
            }
        )
    for i in range(EMAILS):
        loc = LOCALES[i % len(LOCALES)]
        g = gens[loc]
        out["email"].append(
            {
                "text": _sentence(g, rng, "email", loc, g.person.email()),
                "labels": ["email"],
                "source": f"mimesis:{loc.value}:person.email",
            }
        )
    return out


# --- hard negatives: numbers that are not phones, cards or emails -----------------------------

NegGen = Callable[[Generic], str]


def _coords(g: Generic) -> str:
    c = g.address.coordinates()
    return f"{c['latitude']}, {c['longitude']}"


NEGATIVE_TEMPLATES: tuple[tuple[str, NegGen], ...] = (
    ("Order #{} has been dispatched.", lambda g: g.person.identifier("###-#######-#######")),
    ("Invoice no. {} is due at the end of the month.", lambda g: g.person.identifier("######")),
    ("Release {} fixes the login bug.", lambda g: g.development.version()),
    ("Last login: {} (UTC)", lambda g: g.datetime.formatted_datetime(**YEARS)),
    ("Posted on {}", lambda g: g.datetime.formatted_date(**YEARS)),
    (
        "The event payload carries unix time {}.",
        lambda g: str(g.datetime.timestamp(TimestampFormat.POSIX, **YEARS)),
    ),
    ("Total due: {} {}", lambda g: f"{g.finance.price()}|{g.finance.currency_iso_code()}"),
    ("EAN {} on the pallet label.", lambda g: g.code.ean()),
    ("ISBN {} - second edition", lambda g: g.code.isbn()),
    ("Journal ISSN {}", lambda g: g.code.issn()),
    ("Device IMEI {} was registered to the fleet.", lambda g: g.code.imei()),
    ("Replacement part {} is on backorder.", lambda g: g.person.identifier("@@-####-###")),
    ("File checksum {}", lambda g: g.cryptographic.hash()),
    ("trace_id={}", lambda g: g.cryptographic.uuid()),
    (
        "Deliver to {}, {} {}.",
        lambda g: f"{g.address.address()}|{g.address.postal_code()}|{g.address.city()}",
    ),
    ("Pin the meeting point at {}.", _coords),
    ("Card expires {}; we never store the CVV.", lambda g: g.payment.credit_card_expiration_date()),
    ("The service listens on port {}.", lambda g: str(g.internet.port())),
    ("Parcel {} is held at the depot.", lambda g: g.person.identifier("@@#########@@")),
    ("Case {} was escalated to tier 2.", lambda g: g.person.identifier("########")),
    (
        "{} closed at {} today.",
        lambda g: f"{g.finance.stock_ticker()}|{g.finance.price(minimum=5, maximum=900)}",
    ),
    (
        "Population {} (estimate)",
        lambda g: f"{g.numeric.integer_number(100_000, 90_000_000):,}",
    ),
    (
        "Lot {} expires {}.",
        lambda g: f"{g.person.identifier('####-##-###')}|{g.datetime.date(**YEARS)}",
    ),
    ("Your one-time code is {}.", lambda g: g.code.pin("######")),
    ("Display {} at {}", lambda g: f"{g.hardware.resolution()}|{g.hardware.screen_size()}"),
)


def build_negatives(seed: int) -> list[Row]:
    rows: list[Row] = []
    gens = [(loc, Generic(locale=loc, seed=seed + 200 + n)) for n, loc in enumerate(LOCALES)]
    for i in range(NEGATIVES):
        loc, g = gens[i % len(gens)]
        template, gen = NEGATIVE_TEMPLATES[i % len(NEGATIVE_TEMPLATES)]
        text = template.format(*gen(g).split("|"))
        rows.append({"text": text, "labels": [], "source": f"negative:mimesis:{loc.value}"})
    return rows


def build(seed: int) -> dict[str, list[Row]]:
    files = build_positives(seed)
    files["negatives"] = build_negatives(seed)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1802)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    return write_or_check(build(args.seed), OUT_DIR, ROOT, check=args.check)


if __name__ == "__main__":
    raise SystemExit(main())
