"""Routing state shared by every gateway process through Redis: open circuits, the single
half-open probe, and the per-process deployment health the admin shows.

Keys (hash-tagged like the governance counters, so a Redis Cluster keeps them together):
  ``{odock}:cb``          hash deployment id -> open until (epoch seconds, Redis clock)
  ``{odock}:cb:f:<id>``   failures in the current window (expires with the window)
  ``{odock}:cb:p:<id>``   the half-open probe's claim (SET NX, expires after a cooldown)
  ``{odock}:health:<id>`` hash process -> JSON of that process's figures (expires)

Hot-path cost: none while circuits are closed. ``open_until()`` reads a dict refreshed by
``refresh()`` (once a second, from the gateway's background loop); Redis is called only on
an upstream failure and for a half-open probe.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import orjson
from hiredis import ReplyError

from apps.gateway.redis_client import PipelinedRedis
from apps.gateway.state_store import PREFIX

OPEN_KEY = f"{PREFIX}cb"
# Without Redis (the embedded mode: gateway and admin in one process) the gateway puts its
# per-deployment figures here for the admin to read.
LOCAL_HEALTH: dict[int, dict[str, Any]] = {}
HEALTH_TTL_SECONDS = 60
HEALTH_STALE_SECONDS = 30  # a process that stopped reporting (restarted, gone) is ignored

# KEYS: failures counter, open hash. ARGV: window ms, threshold, cooldown s, deployment id.
FAILURE_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) then
  local t = redis.call('TIME')
  local until_ts = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[4], tostring(until_ts))
  redis.call('DEL', KEYS[1])
  return tostring(until_ts)
end
return false
"""

# KEYS: open hash, probe claim. ARGV: deployment id, cooldown s, "1" when the probe passed.
PROBE_DONE_LUA = """
redis.call('DEL', KEYS[2])
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return false
end
local t = redis.call('TIME')
local until_ts = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], tostring(until_ts))
return tostring(until_ts)
"""


def process_name() -> str:
    """Unique per gateway instance (a test may run several in one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _check(reply: Any) -> Any:
    if isinstance(reply, ReplyError):
        raise RuntimeError(f"routing state: {reply}")
    return reply


class RedisBreakerState:
    """``routing.BreakerState`` over Redis."""

    def __init__(self, url: str, *, timeout_seconds: float = 0.5) -> None:
        self._redis = PipelinedRedis(url, timeout_seconds=timeout_seconds)
        self._open: dict[int, float] = {}
        self.process = process_name()

    def open_until(self) -> dict[int, float]:
        return self._open

    async def refresh(self) -> None:
        raw = _check(await self._redis.call("HGETALL", OPEN_KEY)) or []
        self._open = {int(raw[i]): float(raw[i + 1]) for i in range(0, len(raw), 2)}

    async def record_failure(
        self, deployment_id: int, *, threshold: int, window: float, cooldown: float
    ) -> float | None:
        until = _check(
            await self._redis.call(
                "EVAL",
                FAILURE_LUA,
                2,
                f"{PREFIX}cb:f:{deployment_id}",
                OPEN_KEY,
                int(window * 1000),
                threshold,
                cooldown,
                deployment_id,
            )
        )
        if until is None:
            return None
        self._open = {**self._open, deployment_id: float(until)}
        return float(until)

    async def claim_probe(self, deployment_id: int, cooldown: float) -> bool:
        reply = _check(
            await self._redis.call(
                "SET",
                f"{PREFIX}cb:p:{deployment_id}",
                self.process,
                "NX",
                "PX",
                max(int(cooldown * 1000), 1),
            )
        )
        return reply is not None

    async def probe_done(self, deployment_id: int, *, ok: bool, cooldown: float) -> None:
        until = _check(
            await self._redis.call(
                "EVAL",
                PROBE_DONE_LUA,
                2,
                OPEN_KEY,
                f"{PREFIX}cb:p:{deployment_id}",
                deployment_id,
                cooldown,
                "1" if ok else "0",
            )
        )
        opened = dict(self._open)
        if until is None:
            opened.pop(deployment_id, None)
        else:
            opened[deployment_id] = float(until)
        self._open = opened

    async def publish_health(self, report: dict[int, dict[str, Any]]) -> None:
        if not report:
            return
        commands: list[tuple[Any, ...]] = []
        for dep_id, figures in report.items():
            key = f"{PREFIX}health:{dep_id}"
            stamped = {**figures, "at": time.time()}
            commands.append(("HSET", key, self.process, orjson.dumps(stamped)))
            commands.append(("EXPIRE", key, HEALTH_TTL_SECONDS))
        for reply in await self._redis.call_many(commands):
            _check(reply)

    async def close(self) -> None:
        await self._redis.close()


def health_read(client: Any, deployment_ids: list[int]) -> dict[int, dict[str, Any]]:
    """For the admin (sync redis-py client): every process's figures summed per deployment,
    and the shared circuit state."""
    pipe = client.pipeline(transaction=False)
    for dep_id in deployment_ids:
        pipe.hgetall(f"{PREFIX}health:{dep_id}")
    pipe.hgetall(OPEN_KEY)
    *per_dep, opened = pipe.execute()
    fresh_after = time.time() - HEALTH_STALE_SECONDS
    return {
        dep_id: merge_health(
            [
                figures
                for figures in (orjson.loads(v) for v in (rows or {}).values())
                if figures.get("at", 0) >= fresh_after
            ],
            open_until=float(opened[str(dep_id).encode()])
            if str(dep_id).encode() in opened
            else None,
        )
        for dep_id, rows in zip(deployment_ids, per_dep, strict=True)
    }


def merge_health(
    figures: list[dict[str, Any]], *, open_until: float | None = None, breaker: str = ""
) -> dict[str, Any]:
    """Sum several processes' figures; latency is the request-weighted mean."""
    ok = sum(int(f.get("ok") or 0) for f in figures)
    failed = sum(int(f.get("failed") or 0) for f in figures)
    weighted = [
        (float(f["latency_ms"]), int(f.get("ok") or 0) or 1)
        for f in figures
        if f.get("latency_ms") is not None
    ]
    total_weight = sum(w for _, w in weighted)
    return {
        "processes": len(figures),
        "in_flight": sum(int(f.get("in_flight") or 0) for f in figures),
        "ok": ok,
        "failed": failed,
        "error_rate": round(failed / (ok + failed), 4) if ok + failed else None,
        "latency_ms": round(sum(v * w for v, w in weighted) / total_weight, 1)
        if total_weight
        else None,
        "open_until": open_until,
        "breaker": breaker or ("closed" if open_until is None else "tripped"),
    }
