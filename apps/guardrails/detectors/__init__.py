"""Guardrail detectors: pure, offline, fast functions from text to findings.

No Django, no I/O: they run on the gateway's event loop. Build them once per policy with
:func:`build_detectors` (every regex is compiled at import or build time), then
:func:`scan_all` each message part, :func:`redact` what must not reach a provider and
:func:`restore` the answer.

Config (a plain dict, e.g. from a policy row or ``odock_apply``)::

    {
        "pii": ["email", "phone", "card", "iban", "us_ssn", "ip_address"],  # or true (all);
               # an entry may be {"name": "ip_address", "include_private": false} or
               # {"name": "phone", "regions": ["US", "GB"], "leniency": "valid"}
        "secrets": true,                      # or {"high_entropy": false}
        "prompt_injection": {"threshold": 0.7, "method": "combined"},  # or true;
               # method: "combined" (rules and the learned model), "rules" or "model"
        "custom": [{"name": "codes", "regex": "PRJ-\\d{4}", "keywords": ["falcon"],
                    "case_sensitive": false}],
    }

Not built: names and postal addresses (no well-kept offline library is installed) and limits
(input size, message count, tokens), which the integration enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    Detector,
    Finding,
    blocked_label,
    collapse,
    kind_prefix,
    note_finding,
    rule_and_kind,
    scan_all,
)
from .credentials import SecretsDetector
from .custom import CustomDetector
from .injection import InjectionDetector
from .pii import PII_DETECTORS
from .redact import placeholder_label, redact, restore

__all__ = [
    "PII_NAMES",
    "all_detectors_config",
    "Detector",
    "Finding",
    "blocked_label",
    "build_detectors",
    "collapse",
    "kind_prefix",
    "note_finding",
    "rule_and_kind",
    "placeholder_label",
    "redact",
    "restore",
    "scan_all",
]

PII_NAMES: tuple[str, ...] = tuple(PII_DETECTORS)
_CONFIG_KEYS = {"pii", "secrets", "prompt_injection", "custom"}


def _options(value: Any, section: str) -> dict[str, Any] | None:
    """``true`` / ``{...}`` → options dict; ``false`` / ``None`` → off."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        if value.get("enabled", True) is False:
            return None
        return {k: v for k, v in value.items() if k != "enabled"}
    raise ValueError(f"guardrails config: {section!r} must be true, false or an object")


def build_detectors(config: Mapping[str, Any]) -> list[Detector]:
    """Detectors for a policy config; unknown keys, names and options raise ``ValueError``
    at build time so a typo fails when the policy is saved, not silently at request time."""
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"guardrails config: unknown keys {sorted(unknown)}")
    detectors: list[Detector] = []

    pii = config.get("pii")
    if pii is True:
        pii = list(PII_NAMES)
    for entry in pii or ():
        options = dict(entry) if isinstance(entry, Mapping) else {"name": entry}
        name = options.pop("name", None)
        if name not in PII_DETECTORS:
            raise ValueError(f"guardrails config: unknown PII detector {name!r}")
        try:
            detectors.append(PII_DETECTORS[name](**options))
        except ValueError as exc:  # a detector's own option check ("regions: unknown …")
            raise ValueError(f"guardrails config: bad options for {name!r}: {exc}") from exc
        except TypeError as exc:
            raise ValueError(f"guardrails config: bad options for {name!r}: {exc}") from exc

    secrets = _options(config.get("secrets"), "secrets")
    if secrets is not None:
        extra = set(secrets) - {"high_entropy"}
        if extra:
            raise ValueError(f"guardrails config: unknown secrets options {sorted(extra)}")
        detectors.append(SecretsDetector(high_entropy=bool(secrets.get("high_entropy", True))))

    injection = _options(config.get("prompt_injection"), "prompt_injection")
    if injection is not None:
        extra = set(injection) - {"threshold", "method"}
        if extra:
            raise ValueError(f"guardrails config: unknown prompt_injection options {sorted(extra)}")
        detectors.append(
            InjectionDetector(
                threshold=float(injection.get("threshold", 0.7)),
                method=str(injection.get("method", "combined")),
            )
        )

    names: set[str] = set()
    for rule in config.get("custom") or ():
        detector = CustomDetector.from_config(rule)
        if detector.name in names:
            raise ValueError(f"guardrails config: duplicate custom rule {detector.name!r}")
        names.add(detector.name)
        detectors.append(detector)
    return detectors


def all_detectors_config() -> dict[str, Any]:
    """Every built-in detector on (benchmarks, the corpus evaluation)."""
    return {"pii": list(PII_NAMES), "secrets": True, "prompt_injection": {"threshold": 0.7}}
