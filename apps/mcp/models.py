"""Upstream MCP servers, per-tool settings and tool grants.

Grants hang on the hierarchy like model access (``ScopedRule``): a level with allow grants
allows only those, every level is intersected, and a deny anywhere wins. Unlike models,
a key with no allow grant at any level may call no tool: a tool call is an action.
"""

from __future__ import annotations

import json
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from apps.core.fields import EncryptedTextField
from apps.core.secrets import SecretChangeTimes, secret_changed_at_field
from apps.mcp.policy import SEPARATOR
from apps.policies.models import ScopedRule, _exactly_one_level


class Transport(models.TextChoices):
    HTTP = "http", "Streamable HTTP"
    STDIO = "stdio", "stdio (local command)"


class McpServer(SecretChangeTimes, models.Model):
    """An upstream MCP server the gateway keeps a pooled session to."""

    name = models.SlugField(
        max_length=64, unique=True, help_text="Prefix of its tools' names: <name>__<tool>."
    )
    namespaced = models.BooleanField(
        default=True,
        help_text=(
            "Agents see its tools and prompts as <name>__<tool>. Off: under their upstream "
            "names (a name two servers of one key share is then hidden and refused as "
            "ambiguous)."
        ),
    )
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.HTTP)
    url = models.URLField(max_length=500, blank=True, help_text="Streamable HTTP endpoint.")
    command = models.CharField(max_length=500, blank=True, help_text="stdio: the executable.")
    args = models.JSONField(default=list, blank=True, help_text='stdio: e.g. ["-m", "server"]')
    bearer_token = EncryptedTextField(
        blank=True, help_text="Sent upstream as 'Authorization: Bearer …'; never shown back."
    )
    headers = EncryptedTextField(
        blank=True, help_text='JSON object of extra upstream headers, e.g. {"X-Api-Key": "…"}.'
    )
    environment = EncryptedTextField(
        blank=True,
        help_text="stdio: JSON object of environment variables for the command (its "
        'credentials), e.g. {"GITHUB_TOKEN": "…"}; added to a minimal default environment.',
    )
    bearer_token_changed_at = secret_changed_at_field()
    headers_changed_at = secret_changed_at_field()
    environment_changed_at = secret_changed_at_field()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "MCP server"
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if SEPARATOR in self.name:
            raise ValidationError({"name": f"A server name may not contain '{SEPARATOR}'."})
        if self.transport == Transport.HTTP and not self.url:
            raise ValidationError({"url": "A Streamable HTTP server needs a URL."})
        if self.transport == Transport.STDIO and not self.command:
            raise ValidationError({"command": "A stdio server needs a command."})
        if not isinstance(self.args, list) or not all(isinstance(a, str) for a in self.args):
            raise ValidationError({"args": "A list of strings."})
        self.extra_headers()  # raise on a malformed value
        self.extra_environment()

    def extra_headers(self) -> dict[str, str]:
        return _string_map(self.headers, "headers", "header name")

    def extra_environment(self) -> dict[str, str]:
        return _string_map(self.environment, "environment", "variable name")


def _string_map(text: str, field: str, what: str) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValidationError({field: f"A JSON object of {what} to string value."})
    return value


class McpTool(models.Model):
    """Optional settings of one upstream tool (tools without a row have the defaults)."""

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=128, help_text="The tool's upstream name.")
    requires_approval = models.BooleanField(
        default=False, help_text="Refused unless a grant allows calling it unattended."
    )
    rpm = models.PositiveIntegerField(
        "calls per minute (per key)", null=True, blank=True, validators=[MinValueValidator(1)]
    )
    cost_usd = models.DecimalField(
        "cost per call (USD)",
        max_digits=12,
        decimal_places=6,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Counted against the key's budgets at every level.",
    )

    class Meta:
        verbose_name = "MCP tool setting"
        constraints = [models.UniqueConstraint(fields=("server", "name"), name="mcptool_unique")]

    def __str__(self) -> str:
        return f"{self.server.name}{SEPARATOR}{self.name}"


class Effect(models.TextChoices):
    ALLOW = "allow", "allow"
    DENY = "deny", "deny"


class ToolGrant(ScopedRule):
    """Allows or denies one tool ("*": every tool) of one server at one level."""

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="grants")
    tool = models.CharField(max_length=128, default="*", help_text='Upstream tool name or "*".')
    effect = models.CharField(max_length=5, choices=Effect.choices, default=Effect.ALLOW)
    unattended = models.BooleanField(
        default=False, help_text="May call tools that require approval without one."
    )

    class Meta:
        verbose_name = "MCP tool grant"
        constraints = [_exactly_one_level("toolgrant_exactly_one_level")]

    def __str__(self) -> str:
        return f"{self.level} {self.effect} {self.server.name}{SEPARATOR}{self.tool}"
