"""Guardrail rules, attachable at any level of the hierarchy like budgets and limits.

A rule names a detector (or a detector family), what to do when it finds something
(block, redact, flag), whether it is enforced or only shadowed (recorded, not acted on),
and where it runs (the prompt, the answer, or both). Inheritance: a child level may tighten
its parent's rule for the same detector, never loosen it — unless the parent's rule says
``allow_loosen``. ``apps.guardrails.policy`` computes the effective rules per key.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models

from apps.guardrails.detectors.pii import phone_leniency_ok, phone_regions_ok
from apps.policies.models import ScopedRule, _exactly_one_level


class Detector(models.TextChoices):
    EMAIL = "email", "Email address"
    PHONE = "phone", "Phone number"
    CARD = "card", "Payment card number (Luhn)"
    IBAN = "iban", "IBAN (checksum)"
    US_SSN = "us_ssn", "US social security number"
    IP_ADDRESS = "ip_address", "IP address"
    SECRETS = "secrets", "Secrets (API keys, private keys, JWTs, passwords, high entropy)"
    PROMPT_INJECTION = "prompt_injection", "Prompt injection / jailbreak"
    CUSTOM = "custom", "Custom regex / keywords"
    INPUT_LIMITS = "input_limits", "Input limits (size, messages, tokens)"
    PLUGIN = "plugin", "Plugin (installed in settings, by name)"


class Action(models.TextChoices):
    BLOCK = "block", "Block (400 guardrail_blocked)"
    REDACT = "redact", "Redact (mask before the provider sees it)"
    FLAG = "flag", "Flag (allow and record)"


class Mode(models.TextChoices):
    ENFORCE = "enforce", "Enforce"
    SHADOW = "shadow", "Shadow (record what it would do, do nothing)"


class Stage(models.TextChoices):
    INPUT = "input", "Prompt (inspect stage)"
    OUTPUT = "output", "Answer (route stage, streams included)"
    BOTH = "both", "Prompt and answer"


class GuardrailRule(ScopedRule):
    detector = models.CharField(max_length=32, choices=Detector.choices)
    name = models.SlugField(
        max_length=64, blank=True, help_text="Custom rules: their name (findings say custom.NAME)."
    )
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.BLOCK)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.ENFORCE)
    stage = models.CharField(max_length=8, choices=Stage.choices, default=Stage.INPUT)
    allow_loosen = models.BooleanField(
        default=False,
        help_text="Levels below may loosen this rule (by default they may only tighten).",
    )
    restore_in_response = models.BooleanField(
        default=False, help_text="Redact: put the original values back into the answer."
    )
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text='Custom: {"regex": "...", "keywords": ["..."]}; prompt injection: '
        '{"threshold": 0.7}; input limits: {"max_input_bytes": N, "max_messages": N, '
        '"max_prompt_tokens": N}.',
    )

    class Meta:
        verbose_name = "guardrail rule"
        constraints = [_exactly_one_level("guardrailrule_exactly_one_level")]

    def __str__(self) -> str:
        shadow = " (shadow)" if self.mode == Mode.SHADOW else ""
        return f"{self.level} {self.key_name}: {self.action}{shadow} on {self.stage}"

    @property
    def key_name(self) -> str:
        """What the rule governs: a detector, or one custom rule."""
        if self.detector in (Detector.CUSTOM, Detector.PLUGIN):
            return f"{self.detector}.{self.name}"
        return self.detector

    def clean(self) -> None:
        super().clean()
        settings = self.settings or {}
        if not isinstance(settings, dict):
            raise ValidationError({"settings": "A JSON object."})
        if self.detector == Detector.PLUGIN:
            if not self.name:
                raise ValidationError({"name": "The installed plugin's name."})
            if self.action == Action.REDACT or self.stage != Stage.INPUT:
                raise ValidationError("Plugins block or flag, on the prompt.")
        if self.detector == Detector.CUSTOM:
            if not self.name:
                raise ValidationError({"name": "Custom rules need a name."})
            regex, keywords = settings.get("regex"), settings.get("keywords")
            if not regex and not keywords:
                raise ValidationError({"settings": "Give a regex or a keywords list."})
            if regex:
                try:
                    re.compile(regex)
                except re.error as exc:
                    raise ValidationError({"settings": f"Invalid regex: {exc}"}) from exc
            if keywords is not None and (
                not isinstance(keywords, list)
                or not all(isinstance(k, str) and k for k in keywords)
            ):
                raise ValidationError({"settings": "keywords: a list of non-empty strings."})
        if self.detector == Detector.INPUT_LIMITS:
            limits = {"max_input_bytes", "max_messages", "max_prompt_tokens"}
            if (
                not settings
                or set(settings) - limits
                or not all(isinstance(v, int) and v > 0 for v in settings.values())
            ):
                raise ValidationError(
                    {"settings": f"Positive integers for some of {', '.join(sorted(limits))}."}
                )
            if self.action != Action.BLOCK or self.stage != Stage.INPUT:
                raise ValidationError("Input limits block, on the prompt.")
        if self.detector == Detector.PHONE:
            extra = set(settings) - {"regions", "leniency"}
            if extra:
                raise ValidationError({"settings": f"Unknown phone settings {sorted(extra)}."})
            try:
                if "regions" in settings:
                    phone_regions_ok(settings["regions"])
                if "leniency" in settings:
                    phone_leniency_ok(settings["leniency"])
            except ValueError as exc:
                raise ValidationError({"settings": str(exc)}) from exc
        if self.detector == Detector.PROMPT_INJECTION:
            threshold = settings.get("threshold", 0.7)
            if not isinstance(threshold, int | float) or not 0 < threshold <= 1:
                raise ValidationError({"settings": "threshold: a number in (0, 1]."})
            if settings.get("method", "combined") not in ("combined", "rules", "model"):
                raise ValidationError({"settings": "method: combined, rules or model."})
            if self.action == Action.REDACT:
                raise ValidationError({"action": "Prompt injection can be blocked or flagged."})
        if self.restore_in_response and self.action != Action.REDACT:
            raise ValidationError({"restore_in_response": "Only redacting rules can restore."})
