"""Guardrails on tool arguments and tool results, and argument validation.

The same compiled rules as model traffic (``KeyEntry.guardrails``): every string inside
the arguments is scanned by the key's input rules before the call, every string of the
result by its output rules before the agent sees it. Findings name the detector and the
JSON path, never the matched text.
"""

from __future__ import annotations

from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from apps.gateway.context import RequestContext
from apps.guardrails.detectors import note_finding, redact, scan_all

MAX_DEPTH = 32


class ValueBlocked(Exception):
    """A block rule matched a string inside a tool's arguments, result or a relayed
    message: where (``path``) and by which detector. Not the proxy's
    ``guardrails.Blocked``, which carries the bytes released before a stream's block."""

    def __init__(self, detector: str, path: str) -> None:
        super().__init__(detector)
        self.detector = detector
        self.path = path


def note(ctx: RequestContext, detector: str, action: str, stage: str) -> None:
    """As the gateway records them: the rule's detector name, the sub-kind beside it."""
    note_finding(ctx.findings, detector, action, stage)


def _scan_text(
    ctx: RequestContext, rules: tuple[Any, ...], text: str, path: str, stage: str, numbering: dict
) -> str:
    for compiled in rules:
        rule = compiled.rule
        findings = scan_all(compiled.detectors, text)
        if not findings:
            continue
        if rule.shadow:
            for f in findings:
                note(ctx, f.detector, f"shadow:{rule.action}", stage)
            continue
        for f in findings:
            note(ctx, f.detector, rule.action, stage)
        if rule.action == "block":
            raise ValueBlocked(findings[0].detector, path)
        if rule.action == "redact":
            text, pairs = redact(text, findings, numbering=numbering)
            ctx.redactions.extend(p for p in pairs if p not in ctx.redactions)
    return text


def scan_value(
    ctx: RequestContext,
    rules: tuple[Any, ...],
    value: Any,
    *,
    stage: str,
    path: str = "",
    scrub: tuple[str, ...] = (),
    numbering: dict | None = None,
    depth: int = 0,
) -> Any:
    """``value`` with every string scanned (redactions applied); raises ``ValueBlocked``.
    ``scrub``: literal values (upstream credentials) replaced wherever they appear."""
    numbering = {} if numbering is None else numbering
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, str):
        for secret in scrub:
            if secret in value:
                value = value.replace(secret, "[REDACTED]")
                note(ctx, "upstream_credential", "redact", stage)
        return _scan_text(ctx, rules, value, path, stage, numbering) if rules else value
    if isinstance(value, dict):
        return {
            k: scan_value(
                ctx,
                rules,
                v,
                stage=stage,
                path=f"{path}.{k}",
                scrub=scrub,
                numbering=numbering,
                depth=depth + 1,
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            scan_value(
                ctx,
                rules,
                v,
                stage=stage,
                path=f"{path}[{i}]",
                scrub=scrub,
                numbering=numbering,
                depth=depth + 1,
            )
            for i, v in enumerate(value)
        ]
    return value


_VALIDATORS: dict[bytes, Draft202012Validator | None] = {}


def _validator(schema: dict[str, Any]) -> Draft202012Validator | None:
    """Compiled once per distinct schema (tools share few); None for a broken schema."""
    cache_key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    if cache_key not in _VALIDATORS:
        if len(_VALIDATORS) > 5000:
            _VALIDATORS.clear()
        try:
            Draft202012Validator.check_schema(schema)
            _VALIDATORS[cache_key] = Draft202012Validator(schema)
        except SchemaError:
            _VALIDATORS[cache_key] = None
    return _VALIDATORS[cache_key]


def schema_violation(schema: dict[str, Any] | None, arguments: dict[str, Any]) -> str | None:
    """Where and which rule the arguments break — never the offending value (it may be a
    secret)."""
    if not schema:
        return None
    validator = _validator(schema)
    if validator is None:
        return None
    error = next(iter(validator.iter_errors(arguments)), None)
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    if error.validator == "required":
        missing = [r for r in error.validator_value if r not in (error.instance or {})]
        return f"arguments{where}: missing required property {', '.join(map(repr, missing))}"
    if error.validator == "additionalProperties":
        return f"arguments{where}: unexpected properties are not allowed"
    return f"arguments{where}: fails the schema's '{error.validator}' rule"
