"""Reads for the providers admin: deployment health as the gateway processes report it."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from apps.gateway.breaker_state import LOCAL_HEALTH, health_read, merge_health
from apps.providers.models import Model, Provider


def deployment_health(deployment_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Circuit state, in-flight requests, last-minute error rate and latency per deployment,
    summed over every gateway process (Redis) or this process's gateway (embedded mode).
    Unreachable Redis gives an empty answer, never an error page."""
    if not deployment_ids:
        return {}
    if not settings.REDIS_URL:
        return {
            dep_id: merge_health([LOCAL_HEALTH[dep_id]], breaker=LOCAL_HEALTH[dep_id]["breaker"])
            for dep_id in deployment_ids
            if dep_id in LOCAL_HEALTH
        }
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        health = health_read(client, deployment_ids)
    except redis.RedisError:
        return {}
    finally:
        client.close()
    now = time.time()
    for figures in health.values():
        until = figures["open_until"]
        if until is not None:
            figures["breaker"] = "open" if now < until else "half_open"
    return health


def providers_by_name() -> dict[str, Provider]:
    """Every provider, by name (only the name loaded): what references resolve against."""
    return {p.name: p for p in Provider.objects.only("name")}


def models_by_name() -> dict[str, Model]:
    """Every public model, by name (only the name loaded)."""
    return {m.name: m for m in Model.objects.only("name")}
