"""Money as people read it: ``100.00``, ``0.50``, ``0.00003`` (never a float)."""

from __future__ import annotations

from decimal import Decimal

from django import template

from apps.identity.limits import usd_text

register = template.Library()


@register.filter
def usd(value: Decimal | int | None) -> str:
    if value is None:
        return ""
    return usd_text(Decimal(value))
