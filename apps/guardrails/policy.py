"""The effective guardrail rules of a key, from the rules of its organisation, team, project
and the key itself (top down).

Per detector (a custom rule counts by its name): the parent's rule stands unless the child's
is at least as strict — a child may tighten, never loosen — except where the parent's rule
says ``allow_loosen``, in which case the child's rule replaces it. Strictness: block >
redact > flag > shadow; a tightened rule also covers every stage the looser one covered.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

STRENGTH = {"block": 3, "redact": 2, "flag": 1}


@dataclass(frozen=True, slots=True)
class EffectiveRule:
    key_name: str  # "email", "secrets", "custom.<name>", ...
    detector: str
    action: str  # block | redact | flag
    shadow: bool
    stages: frozenset[str]  # {"input"}, {"output"} or both
    restore: bool
    settings: str  # canonical JSON of the rule's settings
    level: str  # where the rule that decided comes from, e.g. "team:search"
    allow_loosen: bool = False

    @property
    def strength(self) -> int:
        return 0 if self.shadow else STRENGTH[self.action]

    def settings_dict(self) -> dict[str, Any]:
        return orjson.loads(self.settings)


@dataclass
class Resolution:
    rules: dict[str, EffectiveRule] = field(default_factory=dict)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (level, why)


def _stages(stage: str) -> frozenset[str]:
    return frozenset({"input", "output"}) if stage == "both" else frozenset({stage})


def effective_rule_of(rule: Any) -> EffectiveRule:
    """A ``GuardrailRule`` row (or anything with its fields) as an EffectiveRule."""
    return EffectiveRule(
        key_name=rule.key_name,
        detector=rule.detector,
        action=rule.action,
        shadow=rule.mode == "shadow",
        stages=_stages(rule.stage),
        restore=rule.restore_in_response,
        settings=orjson.dumps(rule.settings or {}, option=orjson.OPT_SORT_KEYS).decode(),
        level=rule.level,
        allow_loosen=rule.allow_loosen,
    )


def resolve(levels: Sequence[Iterable[EffectiveRule]]) -> Resolution:
    """``levels`` from the organisation down to the key."""
    result = Resolution()
    for level_rules in levels:
        for rule in level_rules:
            current = result.rules.get(rule.key_name)
            replaces = current is None or current.allow_loosen
            if replaces or (rule.strength >= current.strength and rule.stages >= current.stages):
                result.rules[rule.key_name] = rule
            elif rule.strength >= current.strength:
                # Stricter action but fewer stages: keep the parent's stages as well.
                result.rules[rule.key_name] = EffectiveRule(
                    **{**_fields(rule), "stages": rule.stages | current.stages}
                )
            else:
                result.ignored.append(
                    (rule.level, f"{rule.key_name}: would loosen {current.level}'s rule")
                )
    return result


def _fields(rule: EffectiveRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in EffectiveRule.__slots__}
