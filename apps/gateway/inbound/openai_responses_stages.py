"""``/v1/responses``' stages and its send wrapper: the I/O around the pure translations.

:class:`ResponsesFormat` installs :class:`ResponsesOutput` (answers go out as Responses
objects or events, and the response is stored before its last byte leaves);
``Authorize(validate_responses)`` checks and translates the request (:func:`prepare`:
``ctx.body`` for the stages, ``ctx.inbound`` for deployments that speak the format);
:class:`PreviousResponse` loads the stored conversation of ``previous_response_id``. The
translations are :mod:`.openai_responses` (requests) and :mod:`.openai_responses_output`
(answers); the module docstring of the former says what is carried and what refused.

Stored responses: ``store`` (default true) saves the final response and this turn's
input items, bounded (``STORE_TIMEOUT_SECONDS``); a store that fails, stalls or refuses
(too large) never fails the answer (it was paid for): it goes out saying ``store:
false``, and the record says "response not stored". Loading a previous response that does
not answer in time is the store's 503 ``store_unavailable`` with ``Retry-After``; one
that does not exist in the key's project a 404 naming ``previous_response_id``, the same
for another project's or organisation's id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from apps.gateway.context import InboundRequest, Outcome, RequestContext, StageName
from apps.gateway.errors import GatewayError
from apps.gateway.inbound.openai_responses import (
    FORMAT,
    Turn,
    check_request,
    governed,
    input_items,
    native_request,
    responses_to_openai,
)
from apps.gateway.inbound.openai_responses_output import (
    ResponseStream,
    chat_to_response,
    new_id,
)
from apps.gateway.providers.sse import typed_event
from apps.gateway.response_store import (
    ResponseStore,
    ResponseStoreRefused,
    ResponseStoreUnavailable,
    StoredResponse,
    response_not_found,
)
from apps.gateway.stages import parse_json_body

log = logging.getLogger(__name__)

#: Bound on each call to the response store (the store bounds itself too).
STORE_TIMEOUT_SECONDS = 5.0


def prepare(ctx: RequestContext, turn: Turn, *, pending_history: bool = False) -> None:
    """``ctx.body`` (the chat translation the stages govern) and, for deployments that
    speak the format, ``ctx.inbound`` (the native request). What only a native deployment
    can carry is kept in ``inbound.untranslatable``: the route stage skips translated
    deployments then, and answers that 400 if nothing else could serve the request."""
    untranslatable = None
    try:
        ctx.body = responses_to_openai(
            turn.body, turn.items, turn.history, pending_history=pending_history
        )
    except GatewayError as error:
        if error.code != "unsupported_parameter":
            raise
        untranslatable = error
    if pending_history:
        return  # the chain is not loaded yet (PreviousResponse prepares again)
    native = native_request(turn.body, turn.history, turn.items)
    if untranslatable is not None:
        ctx.body = governed(native)
    ctx.inbound = InboundRequest(
        FORMAT,
        native,
        untranslatable=untranslatable,
        governed=governed,
        adopt=installed(ctx).adopt,
    )


def validate_responses(ctx: RequestContext) -> None:
    """Parse and check a Responses request; set ``ctx`` up as for chat (this turn only:
    :class:`PreviousResponse` adds a stored conversation)."""
    body = parse_json_body(ctx)
    check_request(body)
    items = input_items(body.get("input"))
    turn = Turn(body, items, new_id("resp"), int(ctx.started_wall))
    output = installed(ctx)
    output.turn = turn
    ctx.model_name = body["model"]
    ctx.stream = body.get("stream") is True
    ctx.include_usage = True
    # With a previous response, references may point into the stored chain: they are
    # resolved once it is loaded (PreviousResponse), the rest is checked now.
    prepare(ctx, turn, pending_history=turn.previous_id is not None)


# --------------------------------------------------------------------------- the stages


class ResponsesFormat:
    """First stage of ``/v1/responses``: answers go out as Responses objects/events."""

    name = StageName.RESPONSES_FORMAT

    def __init__(self, store: ResponseStore) -> None:
        self._store = store

    async def run(self, ctx: RequestContext) -> None:
        if not isinstance(ctx.send, ResponsesOutput):
            ctx.send = ResponsesOutput(ctx, ctx.send, self._store)


class PreviousResponse:
    """``previous_response_id``: the stored chain before this turn's input — the key's
    project's only, as ``GET /v1/responses/{id}`` (a continuation shows the model, and so
    the client, the whole conversation). A missing, expired, deleted or another
    project's or organisation's id is the same 404; a chain with a turn gone, or past the
    store's limits, the store's 400 naming ``previous_response_id``."""

    name = StageName.PREVIOUS_RESPONSE

    def __init__(self, store: ResponseStore) -> None:
        self._store = store

    async def run(self, ctx: RequestContext) -> None:
        turn = installed(ctx).turn
        assert turn is not None and ctx.key is not None
        previous = turn.previous_id
        if previous is None:
            ctx.decide(self.name, Outcome.PASS, "no previous_response_id")
            return
        identity = ctx.key.identity
        try:
            async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
                history = await self._store.conversation(
                    identity.org_id, previous, project_id=identity.project_id
                )
        except ResponseStoreRefused as refused:  # a turn gone, or too long: never shortened
            ctx.decide(self.name, Outcome.DENY, f"previous response refused: {refused.code}")
            raise
        except Exception as exc:  # unavailable, timed out, or failed: never a hang or a 500
            if not isinstance(exc, ResponseStoreUnavailable | TimeoutError):
                log.exception("loading response %s failed", previous)
            ctx.decide(self.name, Outcome.ERROR, "response store unavailable")
            raise ResponseStoreUnavailable() from exc
        if history is None:
            ctx.decide(self.name, Outcome.DENY, "previous response not found")
            raise response_not_found(previous, param="previous_response_id")
        turn.history = history
        try:
            prepare(ctx, turn)
        except GatewayError as error:
            ctx.decide(self.name, Outcome.DENY, f"invalid request: {error.code}")
            raise
        ctx.decide(self.name, Outcome.ALLOW, f"{len(history)} items before this turn")


# --------------------------------------------------------------------------- the answer


#: The events that end a native answer (their response is stored before they leave).
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})
_GATEWAY_ERROR = b'data: {"error"'


def _before_event(body: bytes, kind: str) -> bytes:
    """``body`` (whole events) up to the event ``kind`` (an event's data is one JSON line,
    so a blank line followed by its name can only be where it starts)."""
    name = b"event: " + kind.encode() + b"\n"
    if body.startswith(name):
        return b""
    at = body.find(b"\n\n" + name)
    return body[: at + 2] if at >= 0 else body


def _sse_data(event: bytes) -> dict[str, Any] | None:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return None
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


class ResponsesOutput:
    """Wraps ``ctx.send``: OpenAI chat messages in, Responses ones out; stores the
    response (``store``) before the last byte leaves."""

    def __init__(self, ctx: RequestContext, send: Any, store: ResponseStore) -> None:
        self._ctx = ctx
        self._send = send
        self._store = store
        self.turn: Turn | None = None
        self._start: dict[str, Any] | None = None
        self._mode = ""  # "json", "sse" or "raw"
        self._parts: list[bytes] = []
        self._buffer = b""
        self._stream: ResponseStream | None = None
        self._native = False  # this attempt went to a deployment speaking the format
        self._events = 0  # events of a native stream sent so far (the next sequence number)
        self._guarded = False  # a native stream under an output guard (events renumbered)
        self._snapshot: dict[str, Any] | None = None  # its last response object
        # The native answer's final response object and the stream event carrying it (None
        # for a whole answer), adopted and not yet stored.
        self._final: tuple[dict[str, Any], dict[str, Any] | None] | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if self._mode == "native" and message["type"] == "http.response.body":
            await self._relay_native(message)  # first: one per stream event
            return
        if message["type"] == "http.response.start":
            headers = message.get("headers") or []
            content_type = next((v for k, v in headers if k == b"content-type"), b"")
            inbound = self._ctx.inbound
            self._native = inbound is not None and inbound.native
            if self._native and content_type.startswith(b"text/event-stream"):
                self._mode = "native"
                self._guarded = self._ctx.output_guard is not None
                await self._send(message)
            elif content_type.startswith(b"text/event-stream") and self.turn is not None:
                self._mode = "sse"
                options = self.turn.body.get("stream_options") or {}
                self._stream = ResponseStream(
                    self.turn.shell(self._ctx.model_name),
                    obfuscate=options.get("include_obfuscation") is not False,
                    namespaces=self.turn.namespaces,
                )
                await self._send(message)
            elif content_type.startswith(b"application/json") and self.turn is not None:
                if self._native and not self.turn.store:
                    # Nothing to store and nothing to translate: the answer is already the
                    # client's (adopted by the provider module), so it goes out as it is.
                    self._mode = "raw"
                    await self._send(message)
                    return
                self._mode = "json"
                self._start = message  # held until the body is complete
            else:
                self._mode = "raw"  # refusals before validation: already OpenAI-style
                await self._send(message)
            return
        if message["type"] != "http.response.body" or self._mode == "raw":
            await self._send(message)
            return
        if self._mode == "json":
            self._parts.append(message.get("body", b""))
            if not message.get("more_body"):
                await self._send_json()
            return
        await self._relay_sse(message)

    async def _send_json(self) -> None:
        assert self._start is not None and self.turn is not None
        body = b"".join(self._parts)
        if self._start["status"] == 200 and self._final is not None:  # a native answer
            response, _ = self._final
            self._final = None
            if self._ctx.output_guard is not None:
                response = orjson.loads(body)  # as guarded: what the client sees is stored
            if response.get("status") in ("completed", "incomplete") and not await self._save(
                response
            ):
                body = orjson.dumps(response)  # it says ``store: false`` now
        elif self._start["status"] == 200:
            try:
                answer = orjson.loads(body)
            except orjson.JSONDecodeError:
                answer = None
            if isinstance(answer, dict) and "choices" in answer:
                shell = self.turn.shell(self._ctx.model_name)
                response = chat_to_response(answer, shell, self.turn.namespaces)
                await self._save(response)
                body = orjson.dumps(response)
        headers = [(k, v) for k, v in self._start.get("headers") or [] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

    async def _relay_sse(self, message: dict[str, Any]) -> None:
        stream = self._stream
        assert stream is not None
        self._buffer += message.get("body", b"").replace(b"\r\n", b"\n")
        *events, self._buffer = self._buffer.split(b"\n\n")
        out = b""
        for raw in events:
            data = _sse_data(raw) if raw else None
            if data is not None:
                out += stream.feed(data)
        more = bool(message.get("more_body"))
        if not more:
            out += stream.close_items()
            if not stream.ended:  # completed or incomplete, not failed
                await self._save(stream.response)
            out += stream.final()
        if out or not more:
            await self._send({"type": "http.response.body", "body": out, "more_body": more})

    def adopt(self, response: dict[str, Any], event: dict[str, Any] | None) -> None:
        """A native response object made the client's (``InboundRequest.adopt``): the
        gateway's id (the one stored and continued), the public model name, its ``store``
        and ``previous_response_id``, not the upstream's. The final one is kept to store
        before it leaves."""
        turn = self.turn
        assert turn is not None
        response["id"] = turn.response_id
        response["model"] = self._ctx.model_name
        response["store"] = turn.store
        response["previous_response_id"] = turn.previous_id
        self._snapshot = response
        if event is None or event.get("type") in _FINAL_EVENTS:
            self._final = (response, event)

    async def _relay_native(self, message: dict[str, Any]) -> None:
        """A native stream, its response objects already adopted by the provider module:
        the final one is stored before the bytes carrying it leave; the gateway's own error
        event (``data: {"error": ...}``) becomes ``error`` + ``response.failed``."""
        body = message.get("body", b"")
        if self._final is None and not self._guarded and not body.startswith(_GATEWAY_ERROR):
            self._events += body.count(b"\n\n")  # the common event: passed on as it is
            await self._send(message)
            return
        if self._guarded and body and not body.startswith(_GATEWAY_ERROR):
            await self._send({**message, "body": await self._renumbered(body)})
            return
        if body.startswith(_GATEWAY_ERROR):
            data = _sse_data(body) or {}
            body = self._native_failure(data.get("error") or {})
        elif self._final is not None:
            response, event = self._final
            self._final = None
            if not await self._save(response) and event is not None:
                body = _before_event(body, event["type"]) + typed_event(event)  # store: false
        self._events += body.count(b"\n\n")  # one blank line per event: the next number
        await self._send({**message, "body": body})

    async def _renumbered(self, body: bytes) -> bytes:
        """A guarded native stream's events (the guard may merge held-back deltas, and it
        rewrites the texts of the final events): numbered again, one by one, and the final
        response stored as the guard let it out."""
        out = b""
        for raw in body.split(b"\n\n"):
            data = _sse_data(raw) if raw else None
            if data is None or "type" not in data:
                out += raw + b"\n\n" if raw else b""
                continue
            data["sequence_number"] = self._events
            self._events += 1
            if data["type"] in _FINAL_EVENTS and isinstance(data.get("response"), dict):
                self._final = None
                await self._save(data["response"])
            out += typed_event(data)
        return out

    def _native_failure(self, error: dict[str, Any]) -> bytes:
        shell = self._snapshot or self.turn.shell(self._ctx.model_name)  # type: ignore[union-attr]
        stream = ResponseStream(shell, obfuscate=False)
        stream.seq, stream.started = self._events, True
        return stream.fail(error)

    async def _save(self, response: dict[str, Any]) -> bool:
        """Keep the response for ``previous_response_id`` and GET, bounded; when the store
        fails the answer still goes out (it was paid for), saying ``store: false``.
        False: it was to be stored and was not (``response`` was changed)."""
        ctx, turn = self._ctx, self.turn
        if turn is None or not turn.store or ctx.key is None:
            return True
        identity = ctx.key.identity
        stored = StoredResponse(
            id=turn.response_id,
            org_id=identity.org_id,
            key_id=identity.key_id,
            project_id=identity.project_id,
            model=ctx.model_name,
            response=response,
            input_items=turn.items,
            previous_response_id=turn.previous_id,
            created_at=ctx.started_wall,
            instructions=turn.body.get("instructions"),
            metadata=dict(turn.body.get("metadata") or {}),
        )
        try:
            async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
                await self._store.save(stored)
        except Exception as exc:  # the answer is out of the provider: it still goes out
            if isinstance(exc, ResponseStoreUnavailable | TimeoutError):
                log.warning("response %s not stored: the store did not answer", turn.response_id)
            else:
                log.exception("response %s not stored", turn.response_id)
            response["store"] = False
            ctx.decide(StageName.RESPONSES_FORMAT, Outcome.ERROR, "response not stored")
            return False
        ctx.decide(StageName.RESPONSES_FORMAT, Outcome.ALLOW, f"stored {turn.response_id}")
        return True


def installed(ctx: RequestContext) -> ResponsesOutput:
    """The request's output wrapper (installed by :class:`ResponsesFormat`)."""
    send = ctx.send
    if not isinstance(send, ResponsesOutput):
        raise RuntimeError("ResponsesFormat must run first in the /v1/responses pipeline")
    return send
