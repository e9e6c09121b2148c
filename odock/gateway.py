"""Wires the gateway to its database-backed parts (snapshot compiler, record writer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection

from apps.audit.writer import RequestLogWriter
from apps.configlog.services import NUDGE_CHANNEL
from apps.core.crypto import decrypt_bytes, encrypt_bytes
from apps.core.models import config_version_current
from apps.core.postgres import bounded
from apps.gateway.app import GatewayApp, GatewayConfig
from apps.gateway.breaker_state import RedisBreakerState
from apps.gateway.response_store import StoreLimits
from apps.gateway.snapshot import Snapshot, SnapshotDelta, snapshot_apply
from apps.gateway.snapshot_file import (
    snapshot_delta_append,
    snapshot_file_load,
    snapshot_file_save,
)
from apps.gateway.state_store import LocalStateStore, RedisStateStore, StateStore
from apps.guardrails.plugins import plugins_load
from apps.policies.alerts import budget_alert_enqueue
from apps.policies.compile import snapshot_compile
from apps.policies.snapshot_update import snapshot_changes
from apps.policies.spend import spend_counters_ensure
from apps.responses.store import DatabaseResponseStore

log = logging.getLogger(__name__)


class _SnapshotKeeper:
    """Writes the kept snapshot and its updates to disk in order, on one background
    thread: at 100,000 keys pickling and encrypting takes ~1.5 s of CPU, which a starting
    process should not wait for before its first answer."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="odock-keep")

    def save(self, snapshot: Snapshot) -> None:
        self._submit(snapshot_file_save, snapshot)

    def append(self, delta: SnapshotDelta) -> None:
        self._submit(snapshot_delta_append, delta)

    def _submit(self, write: Callable[..., None], item: Snapshot | SnapshotDelta) -> None:
        if self._path is not None:
            self._executor.submit(self._write, write, item)

    def _write(self, write: Callable[..., None], item: Snapshot | SnapshotDelta) -> None:
        try:
            write(self._path, item, encrypt_bytes)
        except Exception:  # serving matters more than keeping a copy
            log.exception("could not keep the policy snapshot in %s", self._path)


def _snapshot_loader(keeper: _SnapshotKeeper) -> Callable[[], Snapshot]:
    """Compile a snapshot; keep it on disk for a restart while the database is away."""

    def load() -> Snapshot:
        close_old_connections()
        snapshot = snapshot_compile()
        keeper.save(snapshot)
        return snapshot

    return load


def _snapshot_updater(keeper: _SnapshotKeeper) -> Callable[[Snapshot], Snapshot | None]:
    """Apply the configuration change log to the snapshot (the loader thread), keeping
    each update on disk after the last full snapshot."""

    def update(snapshot: Snapshot) -> Snapshot | None:
        close_old_connections()
        delta = snapshot_changes(snapshot)
        if delta is None:
            return None
        keeper.append(delta)
        return snapshot_apply(snapshot, delta)

    return update


def _config_nudges(redis_url: str) -> Callable[[Callable[[], None]], Awaitable[None]] | None:
    """Listen on the Redis channel commits publish to (``config_change_nudge``); on every
    (re)subscription nudge once too, for what was published while away."""
    if not redis_url:
        return None

    async def listen(nudge: Callable[[], None]) -> None:
        import redis.asyncio as aioredis

        away = False
        while True:
            client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(NUDGE_CHANNEL)
                    away = False
                    nudge()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            nudge()
            except asyncio.CancelledError:
                raise
            except Exception:
                if not away:  # the poll still applies changes meanwhile
                    away = True
                    log.warning("configuration nudges unavailable (Redis); polling only")
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    return listen


def _snapshot_fallback(kept: Path | None) -> Callable[[], Snapshot | None]:
    return lambda: snapshot_file_load(kept, decrypt_bytes) if kept is not None else None


def _read_version() -> int:
    close_old_connections()
    return config_version_current()


def _close_thread_connection() -> None:
    connection.close()  # resolved per thread: closes the calling thread's connection


def gateway_config_from_settings(**overrides) -> GatewayConfig:
    values = {
        "key_pepper": settings.ODOCK_KEY_PEPPER,
        "upstream_timeout_seconds": settings.ODOCK_UPSTREAM_TIMEOUT_SECONDS,
        "max_body_bytes": settings.ODOCK_MAX_BODY_BYTES,
        "snapshot_poll_seconds": settings.ODOCK_SNAPSHOT_POLL_SECONDS,
        "default_max_output_tokens": settings.ODOCK_DEFAULT_MAX_OUTPUT_TOKENS,
        "hold_ttl_seconds": settings.ODOCK_RESERVATION_TTL_SECONDS,
        "tokenizer_dir": str(settings.VAR_DIR / "tiktoken"),
        "db_outage_grace_seconds": settings.ODOCK_DB_OUTAGE_GRACE_SECONDS,
        "max_attempts": settings.ODOCK_MAX_ATTEMPTS,
        "request_deadline_seconds": settings.ODOCK_REQUEST_DEADLINE_SECONDS,
        "attempt_timeout_seconds": settings.ODOCK_ATTEMPT_TIMEOUT_SECONDS,
        "audit_durable": settings.ODOCK_AUDIT_DURABLE,
        "breaker_threshold": settings.ODOCK_BREAKER_THRESHOLD,
        "breaker_window_seconds": settings.ODOCK_BREAKER_WINDOW_SECONDS,
        "breaker_cooldown_seconds": settings.ODOCK_BREAKER_COOLDOWN_SECONDS,
    }
    values.update(overrides)
    return GatewayConfig(**values)


def _state_store(redis_url: str) -> StateStore:
    return RedisStateStore(redis_url) if redis_url else LocalStateStore()


def _spend_guard(redis_url: str):
    """On every snapshot poll: if Redis lost its counters (restart, flush), rebuild them
    from the database before they can let a budget be overspent."""
    if not redis_url:
        return lambda: None
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)

    def guard() -> None:
        try:
            spend_counters_ensure(client)
        except redis.RedisError:
            log.warning("Redis unreachable while checking spend counters")

    return guard


def response_store_from_settings() -> DatabaseResponseStore:
    """Stored responses in the database every gateway process shares, each call bounded
    by ``ODOCK_RESPONSE_STORE_TIMEOUT_SECONDS`` (then 503 ``store_unavailable``)."""
    return DatabaseResponseStore(
        timeout=settings.ODOCK_RESPONSE_STORE_TIMEOUT_SECONDS,
        threads=settings.ODOCK_RESPONSE_STORE_THREADS,
        limits=StoreLimits(
            max_stored_bytes=settings.ODOCK_RESPONSE_MAX_STORED_BYTES,
            max_chain=settings.ODOCK_RESPONSE_MAX_CHAIN,
            max_conversation_bytes=settings.ODOCK_RESPONSE_MAX_CONVERSATION_BYTES,
        ),
    )


def build_gateway(*, redis_url: str | None = None, **config_overrides) -> GatewayApp:
    redis_url = settings.REDIS_URL if redis_url is None else redis_url
    # Every database call of the gateway's own threads waits at most this long (so a
    # stalled database is noticed like a refused one).
    timeout = settings.ODOCK_DB_TIMEOUT_SECONDS
    kept = settings.ODOCK_SNAPSHOT_FILE
    keeper = _SnapshotKeeper(kept)
    config = gateway_config_from_settings(**config_overrides)
    if config.audit_durable and 2 * timeout > config.audit_durable_timeout_seconds:
        log.warning(
            "ODOCK_DB_TIMEOUT_SECONDS=%g is not well under the %g s a response waits for its "
            "audit record: a stalled database may release answers before their records are "
            "spooled",
            timeout,
            config.audit_durable_timeout_seconds,
        )
    return GatewayApp(
        config=config,
        state_store=_state_store(redis_url),
        breaker_state=RedisBreakerState(redis_url) if redis_url else None,
        guardrail_plugins=plugins_load(settings.ODOCK_GUARDRAIL_PLUGINS),
        on_budget_alert=bounded(budget_alert_enqueue, timeout),
        on_poll=bounded(_spend_guard(redis_url), timeout),
        snapshot_loader=bounded(_snapshot_loader(keeper), timeout),
        snapshot_fallback=_snapshot_fallback(kept),
        snapshot_updater=bounded(_snapshot_updater(keeper), timeout),
        snapshot_nudges=_config_nudges(redis_url),
        version_reader=bounded(_read_version, timeout),
        release_loader=_close_thread_connection,
        response_store=response_store_from_settings(),
        recorder=RequestLogWriter(
            batch_size=settings.ODOCK_RECORD_BATCH_SIZE,
            flush_seconds=settings.ODOCK_RECORD_FLUSH_SECONDS,
            ship_seconds=settings.ODOCK_AUDIT_SHIP_SECONDS,
            segment_bytes=settings.ODOCK_AUDIT_SEGMENT_BYTES,
            spool_dir=settings.ODOCK_AUDIT_SPOOL_DIR,
            seal_seconds=settings.ODOCK_AUDIT_SEAL_SECONDS,
            db_timeout=timeout,
        ),
    )
