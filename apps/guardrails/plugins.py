"""Guardrail plugins: a team's own detector, run in the inspect stage on the prompt.

A plugin is any class with a ``name`` and an async ``check``; it is installed once per
gateway process from settings and switched on per level like a built-in detector, with a
guardrail rule ``detector: plugin, name: <plugin name>`` (block or flag, enforced or shadow,
inherited tighten-only like every rule)::

    class MyPlugin:
        name = "my-check"

        def __init__(self, **options): ...

        async def check(self, texts: Sequence[str], request: PluginRequest) -> PluginResult:
            # texts: every text of the prompt (messages, tool results, tool-call arguments)
            return PluginResult(findings=["my-check.something"])

    # settings / environment (JSON):
    ODOCK_GUARDRAIL_PLUGINS='{"my-check": {"class": "mypkg.MyPlugin", "options": {...}}}'

Findings are detector names (what the record and the 400 name), never matched text. A
plugin that cannot answer says so with ``failed=True``; whether the request then goes on
(fail-open, noted) or is refused with 503 (fail-closed) is the plugin's own setting.
``apps.guardrails.moderation.HttpModeration`` is the example: it calls an external
moderation endpoint with a timeout.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PluginRequest:
    """What a plugin may know about the request (no secrets, no raw headers)."""

    request_id: str
    endpoint: str
    model: str
    organization: str
    team: str
    project: str
    key_prefix: str


@dataclass(frozen=True, slots=True)
class PluginResult:
    findings: Sequence[str] = field(default_factory=tuple)
    failed: bool = False  # the plugin could not decide (timeout, error)
    fail_open: bool = True  # when it failed: go on (True) or refuse with 503 (False)


class GuardrailPlugin(Protocol):
    name: str

    async def check(self, texts: Sequence[str], request: PluginRequest) -> PluginResult: ...


def plugins_load(config: Mapping[str, Mapping[str, Any]]) -> dict[str, GuardrailPlugin]:
    """``{name: {"class": "dotted.path", "options": {...}}}`` → instances, once at start-up."""
    plugins: dict[str, GuardrailPlugin] = {}
    for name, spec in config.items():
        module_name, _, class_name = str(spec["class"]).rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        plugin = cls(**dict(spec.get("options") or {}))
        plugin.name = name
        plugins[name] = plugin
    return plugins
