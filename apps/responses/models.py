"""Stored responses of ``POST /v1/responses`` (``store: true``), kept by the gateway so a
conversation can continue on any provider and from any gateway process.

Decisions, written down:

- **Hard delete.** ``DELETE /v1/responses/{id}`` and the retention purge remove the row:
  the client's prompt and answer are gone at once (privacy), and the audit trail keeps
  that the deletion happened (the ``responses.delete`` record), never its content.
- **No ``expires_at`` column.** A response expires ``response_retention_days`` after
  ``created_at`` under the organisation's *current* setting (0: kept until deleted), like
  audit retention: shortening the retention applies at once to every response already
  stored (reads never return them; the hourly purge removes them), which is what a
  compliance officer changing it expects. Reads join the organisation to know it.
- **JSON kept as text** (``orjson``), not ``jsonb``: exactly what the client got (key
  order included), faster to write and read back, and text that PostgreSQL's ``jsonb``
  would refuse (``\\u0000`` in a prompt) stores fine.
- ``key_id`` / ``project_id`` are plain ids (no foreign key): a stored response outlives
  a key's rotation or removal like an audit record does; the organisation is a real
  foreign key, the scope of every query, and deleting one deletes its responses.
"""

from __future__ import annotations

from django.db import models

from apps.tenancy.models import Organization


class StoredResponse(models.Model):
    id = models.CharField(primary_key=True, max_length=128)  # "resp_…"
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="stored_responses"
    )
    project_id = models.BigIntegerField()
    key_id = models.BigIntegerField()
    model = models.CharField(max_length=200, help_text="The public model name asked for.")
    previous_response_id = models.CharField(max_length=128, null=True, blank=True)
    instructions = models.TextField(null=True, blank=True)
    response_json = models.TextField(help_text="The Response object as sent, JSON.")
    input_items_json = models.TextField(help_text="This turn's input items, JSON.")
    metadata_json = models.TextField(default="{}")
    size_bytes = models.PositiveIntegerField(help_text="Of the JSON kept (the cap's measure).")
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The purge: per organisation, oldest first.
            models.Index(fields=["organization", "created_at"], name="storedresp_org_created"),
        ]

    def __str__(self) -> str:
        return self.id
