"""Wires the gateway to its database-backed parts (snapshot compiler, record writer)."""

from __future__ import annotations

from django.conf import settings
from django.db import close_old_connections, connection

from apps.audit.writer import RequestLogWriter
from apps.core.models import config_version_current
from apps.gateway.app import GatewayApp, GatewayConfig
from apps.gateway.snapshot import Snapshot
from apps.policies.compile import snapshot_compile


def _load_snapshot() -> Snapshot:
    close_old_connections()
    return snapshot_compile()


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
    }
    values.update(overrides)
    return GatewayConfig(**values)


def build_gateway(**config_overrides) -> GatewayApp:
    return GatewayApp(
        config=gateway_config_from_settings(**config_overrides),
        snapshot_loader=_load_snapshot,
        version_reader=_read_version,
        release_loader=_close_thread_connection,
        recorder=RequestLogWriter(
            batch_size=settings.ODOCK_RECORD_BATCH_SIZE,
            flush_seconds=settings.ODOCK_RECORD_FLUSH_SECONDS,
        ),
    )
