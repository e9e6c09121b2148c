"""Write, read and prune the configuration change log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from apps.configlog.models import ConfigChange, ConfigLogState

log = logging.getLogger(__name__)

# Any constant: the transaction-level advisory lock that orders the writers.
_WRITER_LOCK = 0x0D0C_C0F1
# The Redis channel a commit nudges gateway processes on (they poll anyway).
NUDGE_CHANNEL = "odock:config-changed"
_publisher = None


def config_change_nudge() -> None:
    """Tell the gateway processes a change was committed, so they read the log now rather
    than at their next poll. Best effort (a lost nudge costs one poll interval): bounded
    to half a second, never raises."""
    global _publisher
    if not settings.REDIS_URL:
        return
    try:
        if _publisher is None:
            import redis

            _publisher = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5
            )
        _publisher.publish(NUDGE_CHANNEL, b"1")
    except Exception:
        log.warning("could not nudge the gateways about a configuration change", exc_info=True)


def config_change_record(*, scope: str, object_id: int | None, source: str) -> None:
    """Log a change inside the caller's transaction (autocommit: its own statement).

    On PostgreSQL the writers take one transaction-level advisory lock first, so an id is
    only handed out once every earlier writer has committed or rolled back: readers can
    advance past a missing id safely. SQLite already serialises its writers."""
    # One transaction (a savepoint inside the caller's): in autocommit the lock would be
    # released before the insert, and ids could again commit out of order.
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_WRITER_LOCK])
        ConfigChange.objects.create(scope=scope, object_id=object_id, source=source)
    transaction.on_commit(config_change_nudge)


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    changes: list[tuple[int, str, int | None]]  # (id, scope, object_id), in id order
    newest: int  # the highest id in the log (0: empty)
    pruned_through: int
    complete: bool  # False: more than ``limit`` changes waiting


def config_changes_since(cursor: int, *, limit: int = 2000) -> ChangeBatch:
    """The changes after ``cursor`` (three tiny indexed queries)."""
    rows = list(
        ConfigChange.objects.filter(id__gt=cursor)
        .order_by("id")
        .values_list("id", "scope", "object_id")[: limit + 1]
    )
    pruned = ConfigLogState.objects.filter(pk=1).values_list("pruned_through", flat=True).first()
    pruned = pruned or 0
    newest = rows[-1][0] if rows else config_log_newest(pruned_through=pruned)
    return ChangeBatch(
        changes=rows[:limit],
        newest=newest,
        pruned_through=pruned,
        complete=len(rows) <= limit,
    )


def config_log_newest(*, pruned_through: int | None = None) -> int:
    """The highest id the log has handed out (pruned ones included): a full build starts
    its cursor here (read before compiling)."""
    if pruned_through is None:
        pruned_through = (
            ConfigLogState.objects.filter(pk=1).values_list("pruned_through", flat=True).first()
            or 0
        )
    newest = ConfigChange.objects.aggregate(newest=Max("id"))["newest"] or 0
    return max(newest, pruned_through)


def config_log_prune(*, older_than: timedelta = timedelta(days=1)) -> int:
    """Delete old changes, remembering the highest id deleted (processes behind it
    rebuild in full). Returns how many rows went."""
    with transaction.atomic():
        old = ConfigChange.objects.filter(created_at__lt=timezone.now() - older_than)
        through = old.aggregate(through=Max("id"))["through"]
        if through is None:
            return 0
        state, _ = ConfigLogState.objects.select_for_update().get_or_create(pk=1)
        if through > state.pruned_through:
            state.pruned_through = through
            state.save(update_fields=["pruned_through"])
        deleted, _ = ConfigChange.objects.filter(id__lte=through).delete()
        return deleted
