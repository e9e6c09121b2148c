"""The configuration change log: one row per governance change, so each gateway process
applies the changed rows to its snapshot instead of recompiling 100,000 keys."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Scope(models.TextChoices):
    """What a change touches in the compiled snapshot (``apps.policies.compile``)."""

    KEY = "key"  # one key (created, revoked, rotated, moved, deleted)
    PROJECT = "project"  # every key of a project (and its rules)
    TEAM = "team"
    ORG = "org"
    USER = "user"  # every key a person owns (their name, is_active, budgets, limits, access)
    MODEL = "model"  # a model: the model table and the rules that name it
    MODELS = "models"  # the model table only (providers, deployments, fallbacks)
    NONE = "none"  # nothing in the gateway snapshot (e.g. MCP: reloaded on the version)
    ALL = "all"  # unknown reach: every process rebuilds in full


class ConfigChange(models.Model):
    """One change, written in the transaction of the change itself.

    Ids are handed out in commit order (``config_change_record`` serialises the writers),
    so a reader that has seen id N has seen every committed change below N: a missing id
    is a rolled-back transaction, never one still to come."""

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(max_length=8, choices=Scope.choices)
    object_id = models.BigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=100, help_text="The model changed, e.g. keys.VirtualKey")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"#{self.id} {self.source} {self.scope}:{self.object_id}"


class ConfigLogState(models.Model):
    """Single row: the highest id ever pruned. A process whose cursor is below it missed
    changes it can no longer read, and rebuilds its snapshot in full."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    pruned_through = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"config log pruned through #{self.pruned_through}"
