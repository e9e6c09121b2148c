"""Typed provider options: the ``Provider.options`` JSON, parsed once per snapshot.

Each provider declares its options as a frozen dataclass whose fields are all strings
(``api_version``, ``region``…). :func:`options_parse` is what the snapshot compiler
calls: lenient, as the gateway has always been (unknown keys ignored, values taken as
text), so a snapshot never fails to build over an option. :func:`options_check` is the
strict reading for the doors that write options (admin form, ``odock_apply``): every
unknown key and every value that is not text is named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class NoOptions:
    """The options of a provider that takes none."""


def _field_names(options_type: type) -> list[str]:
    return [f.name for f in dataclasses.fields(options_type)]


def options_parse(options_type: type[T], raw: Mapping[str, Any] | None) -> T:
    """``raw`` as ``options_type``: unknown keys are dropped, values become text."""
    names = set(_field_names(options_type))
    values = {str(k): str(v) for k, v in (raw or {}).items() if str(k) in names}
    return options_type(**values)


def options_check(options_type: type, raw: Any, *, allow_unknown: bool = False) -> list[str]:
    """What is wrong with ``raw`` as ``options_type`` (empty when nothing is); with
    ``allow_unknown``, keys the kind does not read are let through (stored, never read)."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        return ["options must be an object"]
    names = _field_names(options_type)
    known = ", ".join(names) or "none"
    problems = []
    for key, value in raw.items():
        if key not in names:
            if allow_unknown:
                continue
            problems.append(f"unknown option {key!r} (known: {known})")
        elif not isinstance(value, str):
            problems.append(f"option {key!r} must be a string, not {type(value).__name__}")
    return problems


def deployment_options(dep: Any, options_type: type[T]) -> T:
    """A deployment's typed options: compiled with the snapshot (``typed_options``), else —
    a deployment built by hand, a snapshot file from an older version — parsed here."""
    typed = getattr(dep, "typed_options", None)
    if isinstance(typed, options_type):
        return typed
    return options_parse(options_type, dict(dep.options))
