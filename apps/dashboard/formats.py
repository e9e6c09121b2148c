"""How the dashboard writes figures into JSON."""

from __future__ import annotations

from decimal import Decimal

from apps.core.money import usd_exact


def money(value: Decimal | int | str | None) -> str:
    """USD as exact text (``apps.core.money.usd_exact``), no float: the page formats it
    for people by the same rules as every other page (``static/dashboard/dashboard.js``)."""
    return usd_exact(value)
