""" "Test this deployment": one real chat request sent through the deployment's provider
adapter — the same translation, credentials, error mapping and connection pool code the
gateway's route stage uses — with a bounded time, answered as text for a person.

Not through the gateway's front door on purpose: a probe needs no virtual key, no budget
and no snapshot reload, and must work before any key may use the model. Nothing is
recorded or charged to any level (it costs the provider one short answer).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from django.conf import settings

from apps.gateway.context import RequestContext
from apps.gateway.errors import GatewayError
from apps.gateway.providers.pool import UpstreamPool
from apps.gateway.providers.registry import PROVIDERS
from apps.gateway.snapshot import DeploymentEntry, Snapshot
from apps.policies.compile import deployment_entry
from apps.providers.models import Deployment

DEFAULT_TIMEOUT_SECONDS = 10.0
PROMPT = "Reply with the single word: ready."
MAX_TOKENS = 16
SECRET_SHOWN_AS = "[provider key]"  # noqa: S105 - the placeholder, not a secret


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the person sees: the answer, or the error as the gateway would report it."""

    ok: bool
    status: int  # 200, or the status a client of the gateway would have received
    code: str  # "" on success, else the gateway's error code (e.g. upstream_auth_failed)
    message: str  # the answer's text, or the error's message (never a credential)
    elapsed_ms: float
    input_tokens: int = 0
    output_tokens: int = 0


def probe_timeout() -> float:
    """Seconds a probe may take in all (``ODOCK_DEPLOYMENT_TEST_TIMEOUT_SECONDS``)."""
    seconds = getattr(settings, "ODOCK_DEPLOYMENT_TEST_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)
    return float(seconds)


def deployment_probe(deployment: Deployment, *, timeout: float | None = None) -> ProbeResult:
    """Send one short chat request to ``deployment`` (its provider loaded) and report the
    answer or the error, within ``timeout`` seconds (default :func:`probe_timeout`)."""
    entry = deployment_entry(deployment)
    return async_to_sync(entry_probe)(
        entry, model_name=deployment.model.name, timeout=timeout or probe_timeout()
    )


def _without_secret(text: str, entry: DeploymentEntry) -> str:
    """An upstream's own message may quote what it was sent; never show the credential."""
    if len(entry.api_key) >= 4:
        text = text.replace(entry.api_key, SECRET_SHOWN_AS)
    return text[:500]


def _answer_text(body: bytes) -> str:
    answer = orjson.loads(body)
    message = answer["choices"][0]["message"]
    return str(message.get("content") or message.get("refusal") or "(an empty answer)")


async def entry_probe(entry: DeploymentEntry, *, model_name: str, timeout: float) -> ProbeResult:
    """The probe itself, on any event loop: a pool of its own (closed before returning),
    the adapter's per-call limits at ``timeout``, and the whole call bounded too."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:  # pragma: no cover - a non-streaming call reads none
        return {"type": "http.disconnect"}

    started = time.perf_counter()
    ctx = RequestContext(
        request_id=f"probe-{uuid.uuid4().hex}",
        endpoint="chat.completions",
        method="POST",
        path="/v1/chat/completions",
        scope={},
        receive=receive,
        send=send,
        snapshot=Snapshot.empty(),
        started=started,
        started_wall=time.time(),
        body={
            "model": model_name,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS,
        },
        model_name=model_name,
    )

    def result(ok: bool, status: int, code: str, message: str) -> ProbeResult:
        return ProbeResult(
            ok=ok,
            status=status,
            code=code,
            message=_without_secret(message, entry),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
            input_tokens=ctx.input_tokens,
            output_tokens=ctx.output_tokens,
        )

    spec = PROVIDERS.get(entry.kind)
    if spec is None:
        return result(False, 503, "provider_not_supported", f"Unknown provider kind {entry.kind}.")
    pool = UpstreamPool(timeout_seconds=timeout, max_connections=1)
    try:
        async with asyncio.timeout(timeout + 1):  # belt and braces over the pool's limits
            await spec.adapter(pool).chat(ctx, entry)
    except GatewayError as exc:
        return result(False, exc.status, exc.code, exc.message)
    except TimeoutError:
        return result(False, 504, "upstream_timeout", "The provider did not answer in time.")
    except Exception as exc:  # noqa: BLE001 - a person clicked a button: show, do not 500
        return result(False, 502, "probe_failed", f"The call failed: {type(exc).__name__}.")
    finally:
        await pool.close()
    body = b"".join(m.get("body", b"") for m in sent if m.get("type") == "http.response.body")
    try:
        text = _answer_text(body)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return result(False, 502, "invalid_response", "The provider's answer could not be read.")
    return result(True, 200, "", text)
