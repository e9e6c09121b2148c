"""Money: Decimal USD. Prices are USD per million tokens."""

from __future__ import annotations

from decimal import Decimal

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
