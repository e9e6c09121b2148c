"""Every provider kind, declared once: kind → :class:`~.contract.ProviderSpec`.

What derives from it: ``ProviderKind`` (the admin's choices), the adapter table
(:func:`build_adapters`), the options check the admin and ``odock_apply`` call
(:func:`options_errors`), the typed options the snapshot compiler stores
(:func:`options_parse`) and the test matrix. A kind without an adapter answers 503
``provider_not_supported`` (and the route stage fails over to the next deployment).
Adding a provider is adding a package beside these and one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from apps.gateway.providers import options as _options
from apps.gateway.providers.anthropic.spec import ANTHROPIC
from apps.gateway.providers.azure.spec import AZURE
from apps.gateway.providers.bedrock.spec import BEDROCK
from apps.gateway.providers.contract import Adapter, ProviderSpec
from apps.gateway.providers.gemini.spec import GEMINI
from apps.gateway.providers.openai.spec import OPENAI, OPENAI_COMPATIBLE

if TYPE_CHECKING:
    from apps.gateway.providers.pool import UpstreamPool

#: In the order the admin lists them.
PROVIDERS: dict[str, ProviderSpec] = {
    spec.kind: spec for spec in (OPENAI, OPENAI_COMPATIBLE, AZURE, ANTHROPIC, GEMINI, BEDROCK)
}


def native_formats() -> dict[str, frozenset[str]]:
    """Provider kind -> the inbound formats it speaks natively (see
    ``ProviderSpec.native_formats``), for the route stage's per-attempt choice."""
    return {kind: spec.native_formats for kind, spec in PROVIDERS.items()}


def choices() -> list[tuple[str, str]]:
    """``(kind, label)`` pairs, for ``ProviderKind`` and the admin's select."""
    return [(spec.kind, spec.label) for spec in PROVIDERS.values()]


def build_adapters(pool: UpstreamPool) -> dict[str, Adapter]:
    """Provider kind -> adapter, all sharing one connection pool per upstream; kinds that
    share an adapter class share its instance (and its cache of built targets)."""
    instances: dict[type, Adapter] = {}
    for spec in PROVIDERS.values():
        if spec.adapter not in instances:
            instances[spec.adapter] = spec.adapter(pool)
    return {kind: instances[spec.adapter] for kind, spec in PROVIDERS.items()}


def options_errors(kind: str, options: Any, *, allow_unknown: bool = False) -> list[str]:
    """What is wrong with ``options`` for a provider of ``kind`` (empty when nothing is):
    unknown keys (unless ``allow_unknown``), values that are not text. For the doors that
    write options."""
    spec = PROVIDERS.get(kind)
    if spec is None:
        return [f"unknown provider kind {kind!r} (known: {', '.join(PROVIDERS)})"]
    return _options.options_check(spec.options, options, allow_unknown=allow_unknown)


def options_parse(kind: str, options: Any) -> Any:
    """The typed options of a provider of ``kind`` (``None`` for an unknown kind): what the
    snapshot compiler stores, so adapters never read the JSON. Lenient: see
    :func:`apps.gateway.providers.options.options_parse`."""
    spec = PROVIDERS.get(kind)
    if spec is None or not isinstance(options, dict | type(None)):
        return None
    return _options.options_parse(spec.options, options)
