"""Money as people read it, by the rule every page follows (``apps.core.money``):
``100.00``, ``0.50``, ``0.00003``, ``1,250.00`` (never a float); the pages write "USD"."""

from __future__ import annotations

from decimal import Decimal

from django import template

from apps.core.money import usd_display

register = template.Library()


@register.filter
def usd(value: Decimal | int | None) -> str:
    if value is None:
        return ""
    return usd_display(value, symbol=False)
