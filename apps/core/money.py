"""Money: Decimal USD. Prices are USD per million tokens; amounts leave as text here."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MTOK = Decimal(1_000_000)
USD_QUANTUM = Decimal("0.000000000001")  # 1e-12 USD; matches the DB columns


def cost_usd(
    *,
    input_tokens: int,
    output_tokens: int,
    input_per_mtok: Decimal,
    output_per_mtok: Decimal,
) -> Decimal:
    """Exact cost of a call; quantised to the precision the database stores."""
    total = (input_tokens * input_per_mtok + output_tokens * output_per_mtok) / MTOK
    return total.quantize(USD_QUANTUM)


# --- Text -----------------------------------------------------------------------------
# One pair of rules for every place spend is shown, so the report, the level pages, the
# dashboard and the API never disagree about the same figure. static/dashboard/
# dashboard.js carries a port of ``usd_display`` (a browser test holds them equal).

DISPLAY_SIGNIFICANT = 3  # digits kept below a dollar


def _decimal(value: Decimal | int | str | None) -> Decimal:
    amount = Decimal(value if value is not None and value != "" else 0)
    if not amount.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return amount


def usd_exact(value: Decimal | int | str | None) -> str:
    """Machine text (API, exports, dashboard JSON): the exact amount at the stored
    precision (1e-12 USD), no exponent, no trailing zeros — ``0.00000495``, ``12.5``,
    ``100``. SQLite's sums carry 20 decimals of zeros; this drops that noise, never a
    digit that counts."""
    amount = _decimal(value).quantize(USD_QUANTUM)
    text = f"{amount:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def usd_display(value: Decimal | int | str | None, *, symbol: bool = True) -> str:
    """Money for people: cents from a dollar up (``$1,234.57``); below a dollar three
    significant digits, at least cents (``$0.50``, ``$0.0375``, ``$0.00000495``), so a
    sub-cent request never reads as ``$0.00``. Half rounds up. ``symbol=False`` leaves
    the ``$`` off for pages that write ``USD`` after the figure."""
    amount = _decimal(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    places = 2
    if 0 < amount < 1:
        # adjusted(): the power of ten of the first significant digit (0.0375 → -2).
        places = max(2, DISPLAY_SIGNIFICANT - 1 - amount.adjusted())
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{rounded:,f}".partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    if rounded == 0:
        sign = ""
    return f"{sign}{'$' if symbol else ''}{whole}.{fraction}"
