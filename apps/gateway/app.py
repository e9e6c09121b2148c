"""The proxy as a raw ASGI callable (routed under Channels' router in odock/asgi.py).

Raw ASGI rather than a Django view: Django's handler costs ~4x the throughput (see
ARCHITECTURE.md). This module wires the stages into pipelines and handles health,
readiness and metrics; it imports no ORM code — the database is reached only through
the ``snapshot_loader``/``version_reader``/``recorder`` handed in.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from apps.gateway.asgi import Receive, Scope, Send
from apps.gateway.background import BackgroundCalls
from apps.gateway.breaker_state import LOCAL_HEALTH, RedisBreakerState
from apps.gateway.context import Outcome, RequestContext, StageName
from apps.gateway.deployment_order import CircuitBreakers, DeploymentStats
from apps.gateway.errors import GatewayError
from apps.gateway.inbound.anthropic_count_tokens import CountTokens, validate_count_tokens
from apps.gateway.inbound.anthropic_messages import AnthropicFormat, validate_messages
from apps.gateway.inbound.openai_responses_stages import (
    PreviousResponse,
    ResponsesFormat,
    validate_responses,
)
from apps.gateway.lifecycle import Pipeline
from apps.gateway.providers.pool import UpstreamPool
from apps.gateway.providers.registry import build_adapters
from apps.gateway.request import context_from_scope, read_body
from apps.gateway.respond import JSON
from apps.gateway.response_store import MemoryResponseStore, ResponseStore
from apps.gateway.snapshot import Snapshot
from apps.gateway.snapshot_store import SnapshotStore
from apps.gateway.stages import (
    Authenticate,
    Authorize,
    Inspect,
    ListModels,
    ReserveBudget,
    RetrieveModel,
    UnknownEndpoint,
    validate_chat,
    validate_embeddings,
)
from apps.gateway.stages.local import MODEL_PREFIX
from apps.gateway.stages.me import ME_PATH, Me
from apps.gateway.stages.record import Record, RecordSink
from apps.gateway.stages.route import RetryPolicy, Route
from apps.gateway.stages.stored_responses import (
    CANCEL_PATH,
    INPUT_ITEMS_PATH,
    RESPONSE_PATH,
    RESPONSES_PREFIX,
    CancelResponse,
    DeleteResponse,
    ListInputItems,
    RetrieveResponse,
    stored_response_path,
)
from apps.gateway.state_store import LocalStateStore, StateStore
from apps.gateway.tokens import tokenizer_configure
from apps.keys.secrets import key_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    key_pepper: str
    upstream_timeout_seconds: float = 60.0
    max_body_bytes: int = 8 * 1024 * 1024
    snapshot_poll_seconds: float = 1.0
    # Output tokens assumed for a budget reservation when the request sets no max_tokens.
    default_max_output_tokens: int = 4096
    # How long a reservation is held before a crashed process's hold is swept, and how
    # often this process sweeps expired holds (at most half the TTL).
    hold_ttl_seconds: float = 600.0
    hold_sweep_seconds: float = 5.0
    tokenizer_dir: str = ""
    # After this long without reaching the database, fail-closed organisations get 503.
    db_outage_grace_seconds: float = 30.0
    # Cyclic-GC generation-0 threshold once started (0: leave Python's default).
    gc_gen0_threshold: int = 10_000
    # Routing: attempts across deployments, the whole request's deadline, and when a
    # deployment's circuit opens (failures within a window) and for how long.
    max_attempts: int = 3
    request_deadline_seconds: float = 120.0
    breaker_threshold: int = 5
    breaker_window_seconds: float = 30.0
    breaker_cooldown_seconds: float = 30.0
    attempt_timeout_seconds: float | None = None
    # The response's last byte waits until its audit record is committed or spooled.
    audit_durable: bool = True
    audit_durable_timeout_seconds: float = 10.0
    routing_refresh_seconds: float = 1.0  # shared circuit state, and health every 5th tick


class Recorder(RecordSink, Protocol):
    def start(self) -> None: ...
    def stop(self, timeout: float = 10.0) -> None: ...


class GatewayApp:
    def __init__(
        self,
        *,
        config: GatewayConfig,
        snapshot_loader: Callable[[], Snapshot],
        version_reader: Callable[[], int],
        recorder: Recorder,
        state_store: StateStore,
        on_budget_alert: Callable[[str], None] = lambda alert: None,
        on_poll: Callable[[], None] = lambda: None,
        release_loader: Callable[[], None] = lambda: None,
        breaker_state: RedisBreakerState | None = None,
        guardrail_plugins: dict[str, Any] | None = None,
        snapshot_fallback: Callable[[], Snapshot | None] = lambda: None,
        response_store: ResponseStore | None = None,
    ) -> None:
        self.config = config
        # Stored responses (``/v1/responses``); the Django side hands in the database's.
        self.response_store: ResponseStore = response_store or MemoryResponseStore()
        self.breaker_state = breaker_state
        self.deployment_stats = DeploymentStats()
        self._routing_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self.snapshots = SnapshotStore(
            loader=snapshot_loader,
            version_reader=version_reader,
            poll_seconds=config.snapshot_poll_seconds,
            release=release_loader,
            on_poll=on_poll,
            fallback=snapshot_fallback,
        )
        self.state_store = state_store
        self.alerts = BackgroundCalls(on_budget_alert, "odock-alerts", on_exit=release_loader)
        self.recorder = recorder
        self.pool = UpstreamPool(timeout_seconds=config.upstream_timeout_seconds)
        adapters = build_adapters(self.pool)
        pepper = config.key_pepper
        authenticate = Authenticate(lambda secret: key_digest(secret, pepper))
        reserve = ReserveBudget(
            state_store,
            fallback=LocalStateStore(),
            default_max_output_tokens=config.default_max_output_tokens,
            hold_ttl_ms=int(config.hold_ttl_seconds * 1000),
            on_alert=self.alerts.submit,
            database_healthy=self._database_healthy,
        )
        inspect = Inspect(guardrail_plugins)
        record = Record(
            recorder,
            durable=config.audit_durable,
            durable_timeout=config.audit_durable_timeout_seconds,
        )
        self.breakers = CircuitBreakers(
            threshold=config.breaker_threshold,
            window=config.breaker_window_seconds,
            cooldown=config.breaker_cooldown_seconds,
            shared=breaker_state,
        )
        policy = RetryPolicy(
            max_attempts=config.max_attempts,
            attempt_timeout_seconds=config.attempt_timeout_seconds,
            deadline_seconds=config.request_deadline_seconds,
            upstream_timeout_seconds=config.upstream_timeout_seconds,
        )

        def route(operation: str) -> Route:
            return Route(
                adapters,
                operation,
                breakers=self.breakers,
                policy=policy,
                stats=self.deployment_stats,
            )

        self.pipelines: dict[tuple[str, str], Pipeline] = {
            ("POST", "/v1/chat/completions"): Pipeline(
                "chat.completions",
                [
                    authenticate,
                    Authorize(validate_chat),
                    inspect,
                    reserve,
                    route("chat"),
                ],
                record,
            ),
            ("POST", "/v1/responses"): Pipeline(
                "responses",
                [
                    ResponsesFormat(self.response_store),  # Responses out; stores the answer
                    authenticate,
                    Authorize(validate_responses),
                    PreviousResponse(self.response_store),  # the stored chain, before inspect
                    inspect,
                    reserve,
                    route("chat"),
                ],
                record,
            ),
            ("POST", "/v1/messages"): Pipeline(
                "messages",
                [
                    AnthropicFormat(),  # answers (refusals included) in Anthropic's format
                    authenticate,
                    Authorize(validate_messages),
                    inspect,
                    reserve,
                    route("chat"),
                ],
                record,
            ),
            ("POST", "/v1/messages/count_tokens"): Pipeline(
                "messages.count_tokens",
                [
                    AnthropicFormat(),
                    authenticate,
                    Authorize(validate_count_tokens),
                    inspect,  # the prompt may be sent to a provider to be counted
                    # the provider's count where it has one, else the estimate; no budget
                    CountTokens(adapters, stats=self.deployment_stats, breakers=self.breakers),
                ],
                record,
            ),
            ("POST", "/v1/embeddings"): Pipeline(
                "embeddings",
                [
                    authenticate,
                    Authorize(validate_embeddings),
                    inspect,
                    reserve,
                    route("embeddings"),
                ],
                record,
            ),
            ("GET", "/v1/models"): Pipeline("models", [authenticate, ListModels()], record),
            ("GET", MODEL_PREFIX): Pipeline("models", [authenticate, RetrieveModel()], record),
            ("GET", ME_PATH): Pipeline("me", [authenticate, Me(state_store)], record),
            **self._stored_response_pipelines(authenticate, record),
        }
        # Paths under /v1/ the gateway does not serve: attributed to the key, then refused.
        unknown = UnknownEndpoint(self.pipelines)
        self._unknown = Pipeline("unknown", [authenticate, unknown], record)
        # The same under /v1/messages, refused in Anthropic's error shape (its clients'
        # SDKs parse nothing else).
        self._unknown_messages = Pipeline(
            "unknown", [AnthropicFormat(), authenticate, unknown], record
        )
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self.metrics: Counter[tuple[str, int]] = Counter()
        self.latency_sum: Counter[str] = Counter()

    def _stored_response_pipelines(
        self, authenticate: Authenticate, record: Record
    ) -> dict[tuple[str, str], Pipeline]:
        """GET/DELETE ``/v1/responses/{id}``, its ``input_items`` and ``cancel``: answered
        from the response store, scoped to the key (``stages.stored_responses``)."""
        store = self.response_store
        stages = [
            ("GET", RESPONSE_PATH, "responses.retrieve", RetrieveResponse(store)),
            ("DELETE", RESPONSE_PATH, "responses.delete", DeleteResponse(store)),
            ("GET", INPUT_ITEMS_PATH, "responses.input_items", ListInputItems(store)),
            ("POST", CANCEL_PATH, "responses.cancel", CancelResponse(store)),
        ]
        return {
            (method, path): Pipeline(endpoint, [authenticate, stage], record)
            for method, path, endpoint, stage in stages
        }

    def _database_healthy(self) -> bool:
        return time.time() - self.snapshots.last_ok < self.config.db_outage_grace_seconds

    # --- lifecycle of the process ----------------------------------------------------

    async def startup(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self.recorder.start()
            self.alerts.start()
            if self.config.tokenizer_dir:
                await asyncio.get_running_loop().run_in_executor(
                    None, tokenizer_configure, Path(self.config.tokenizer_dir)
                )
            await self.snapshots.start()
            self._routing_task = asyncio.create_task(self._routing_loop())
            self._sweep_task = asyncio.create_task(self._hold_sweep_loop())
            self._tune_gc()
            self._started = True

    async def _routing_loop(self) -> None:
        """Learn circuits other processes opened; publish this process's deployment health
        for the admin (Redis, or in-process in the embedded mode)."""
        tick = 0
        while True:
            await asyncio.sleep(self.config.routing_refresh_seconds)
            tick += 1
            report = self.deployment_stats.report() if tick % 5 == 1 else None
            if self.breaker_state is None:
                if report is not None:
                    for dep_id, figures in report.items():
                        figures["breaker"] = self.breakers.state(dep_id)
                        LOCAL_HEALTH[dep_id] = figures
                continue
            try:
                await self.breaker_state.refresh()
                if report is not None:
                    await self.breaker_state.publish_health(report)
            except Exception:  # Redis away: local breakers still work; try again next tick
                log.debug("routing state refresh failed", exc_info=True)

    async def _hold_sweep_loop(self) -> None:
        """Release expired budget holds on a clock: a crashed process's holds come back
        whether or not a request comes by (every process does it; it is idempotent)."""
        interval = min(self.config.hold_sweep_seconds, self.config.hold_ttl_seconds / 2)
        while True:
            await asyncio.sleep(max(interval, 0.05))
            try:
                await self.state_store.sweep()
            except Exception:  # Redis away: reserves sweep too, and so does the job
                log.debug("sweeping expired holds failed", exc_info=True)

    def _tune_gc(self) -> None:
        """Full collections walking Django's start-up objects were the p99 tail (66 ms at
        concurrency 16; 11 ms after this, see bench/RESULTS.md). Freeze what exists now
        and collect the young generation less often; request objects are mostly freed by
        reference counting anyway."""
        if self.config.gc_gen0_threshold:
            gc.collect()
            gc.freeze()
            gc.set_threshold(self.config.gc_gen0_threshold, 10, 10)

    async def shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        loop = asyncio.get_running_loop()
        try:
            if self._routing_task is not None:
                self._routing_task.cancel()
            if self._sweep_task is not None:
                self._sweep_task.cancel()
            await self.snapshots.stop()
            await self.pool.close()
            await self.state_store.close()
            close_store = getattr(self.response_store, "close", None)
            if close_store is not None:
                close_store()
            if self.breaker_state is not None:
                await self.breaker_state.close()
        finally:
            # Whatever failed above, the audit writer drains its queue and seals its chains
            # (records already answered must not be lost on a stop), then the alerts thread.
            try:
                await loop.run_in_executor(None, self.recorder.stop)
            finally:
                await loop.run_in_executor(None, self.alerts.stop)

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- requests ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if not self._started:
            await self.startup()
        pipeline = self.pipelines.get((method, path))
        if pipeline is None and path.startswith(MODEL_PREFIX):  # GET /v1/models/{id}
            pipeline = self.pipelines.get((method, MODEL_PREFIX))
        elif pipeline is None and path.startswith(RESPONSES_PREFIX):  # /v1/responses/{id}…
            pipeline = self.pipelines.get((method, stored_response_path(path)))
        if pipeline is None:
            if path.startswith("/v1/"):  # an API call the gateway does not serve: recorded
                await self._refuse_unknown(method, path, scope, receive, send)
            else:
                await self._serve_other(path, send)
            return
        started = time.perf_counter()
        ctx = context_from_scope(
            scope,
            receive,
            send,
            endpoint=pipeline.endpoint,
            snapshot=self.snapshots.current,
            started=started,
        )
        if not self.snapshots.loaded:
            await self._refuse_without_snapshot(pipeline, ctx)
            return
        if method == "POST":
            try:
                ctx.raw_body = await read_body(receive, self.config.max_body_bytes)
            except GatewayError as error:
                await pipeline.reject(ctx, error)  # too large or cut off
                return
        await pipeline.handle(ctx)
        self.metrics[(pipeline.endpoint, ctx.status)] += 1
        self.latency_sum[pipeline.endpoint] += time.perf_counter() - started

    async def _refuse_unknown(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        ctx = context_from_scope(
            scope, receive, send, endpoint="unknown", snapshot=self.snapshots.current
        )
        anthropic = path == "/v1/messages" or path.startswith("/v1/messages/")
        pipeline = self._unknown_messages if anthropic else self._unknown
        if not self.snapshots.loaded:
            await self._refuse_without_snapshot(pipeline, ctx)
            return
        await pipeline.handle(ctx)
        self.metrics[("unknown", ctx.status)] += 1

    async def _refuse_without_snapshot(self, pipeline: Pipeline, ctx: RequestContext) -> None:
        """Started while the database was away, with no snapshot kept on disk: no key can be
        checked yet. A 503 to retry (and a record) rather than a 401 for every key."""
        ctx.decide(
            StageName.AUTHENTICATE, Outcome.DENY, "no policy snapshot loaded (database unreachable)"
        )
        error = GatewayError(
            503,
            "Policies cannot be loaded right now; retry shortly.",
            code="governance_unavailable",
            type="api_error",
            headers=[(b"retry-after", b"5")],
        )
        await pipeline.reject(ctx, error)
        self.metrics[(pipeline.endpoint, ctx.status)] += 1

    async def _serve_other(self, path: str, send: Send) -> None:
        if path == "/healthz":
            await _plain(send, 200, {"status": "ok"})
        elif path == "/readyz":
            await self._readyz(send)
        elif path == "/metrics":
            await _text(send, 200, self._metrics_text())
        else:  # every served path is under /v1/: a wrong method there is _refuse_unknown's
            # (routed here: the API's own paths without /v1, a base URL set without it)
            message = f"Unknown endpoint {path}. The API is served under /v1: /v1{path}."
            error = GatewayError(404, message, code="unknown_endpoint")
            await _plain(send, 404, None, error.body())

    async def _readyz(self, send: Send) -> None:
        # Not ready once the database has been silent for a few polls, or for the outage
        # grace period if that is shorter (when fail-closed organisations get 503).
        stale_after = min(
            max(5.0, self.config.snapshot_poll_seconds * 5), self.config.db_outage_grace_seconds
        )
        db_ok = (time.time() - self.snapshots.last_ok) < stale_after
        checks = {"snapshot": self.snapshots.loaded, "database": db_ok}
        state_ok = await self.state_store.ping()
        if state_ok is not None:  # None: in-process store, nothing to reach
            checks["redis"] = state_ok
        ready = all(checks.values())
        await _plain(
            send,
            200 if ready else 503,
            {"ready": ready, "checks": checks, "snapshot_version": self.snapshots.current.version},
        )

    def _metrics_text(self) -> str:
        lines = [
            "# HELP odock_requests_total Proxied requests by endpoint and status.",
            "# TYPE odock_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.metrics.items()):
            lines.append(f'odock_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        lines += [
            "# HELP odock_request_seconds_sum Total time spent serving requests.",
            "# TYPE odock_request_seconds_sum counter",
        ]
        for endpoint, total in sorted(self.latency_sum.items()):
            lines.append(f'odock_request_seconds_sum{{endpoint="{endpoint}"}} {total:.6f}')
        lines.append("# TYPE odock_snapshot_version gauge")
        lines.append(f"odock_snapshot_version {self.snapshots.current.version}")
        return "\n".join(lines) + "\n"


async def _plain(send: Send, status: int, payload: object, body: bytes | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [JSON]})
    await send(
        {"type": "http.response.body", "body": body if body is not None else orjson.dumps(payload)}
    )


async def _text(send: Send, status: int, text: str) -> None:
    headers = [(b"content-type", b"text/plain; version=0.0.4")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode()})
