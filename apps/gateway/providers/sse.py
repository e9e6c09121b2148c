"""Server-sent events as providers send them: cut at blank lines, JSON in ``data:``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import orjson


class SSEDecoder:
    """Server-sent events, cut at blank lines; ``parse`` turns one into an event (``None``:
    skip it). ``crlf``: the provider may end lines with ``\\r\\n`` (Google does)."""

    __slots__ = ("_buffer", "_crlf", "_parse")

    def __init__(self, parse: Callable[[bytes], Any], *, crlf: bool = True) -> None:
        self._buffer = b""
        self._parse = parse
        self._crlf = crlf

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data.replace(b"\r\n", b"\n") if self._crlf else data
        if b"\n\n" not in self._buffer:
            return []
        *raw, self._buffer = self._buffer.split(b"\n\n")
        return [e for e in map(self._parse, filter(None, raw)) if e is not None]

    def flush(self) -> list[Any]:
        tail, self._buffer = self._buffer.strip(), b""
        event = self._parse(tail) if tail else None
        return [] if event is None else [event]


def sse_json(event: bytes) -> dict[str, Any] | None:
    """The JSON object in one SSE event's ``data:`` lines (joined), else ``None``."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(b"\n".join(lines))
        return data if isinstance(data, dict) else None
    return None


def typed_event(data: dict[str, Any]) -> bytes:
    """An event named by its data's ``type`` (the Responses API's and Anthropic's shape)."""
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
