"""How the dashboard writes figures into JSON."""

from __future__ import annotations

from decimal import Decimal

MICRO = Decimal("0.000001")


def money(value: Decimal | int | str | None) -> str:
    """USD as text at micro-USD precision: exact as far as a chart can show, no float."""
    return str(Decimal(value or 0).quantize(MICRO))
