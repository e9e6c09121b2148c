"""``{% load money %}``: ``{{ amount|usd }}`` for people (``$0.00000495``, ``$12.34``),
``{{ amount|usd_exact }}`` for the exact figure; the rules are ``apps.core.money``'s."""

from __future__ import annotations

from decimal import Decimal

from django import template

from apps.core.money import usd_display
from apps.core.money import usd_exact as exact

register = template.Library()


@register.filter
def usd(value: Decimal | int | str | None) -> str:
    return "" if value is None or value == "" else usd_display(value)


@register.filter
def usd_exact(value: Decimal | int | str | None) -> str:
    return "" if value is None or value == "" else exact(value)
