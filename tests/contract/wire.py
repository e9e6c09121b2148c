"""What the gateway put on the wire, read raw through the official SDKs' raw-response
doors, so the shapes checked are the bytes a client received, not an SDK's parse of them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

DONE = "[DONE]"


def sse_events(lines: Iterable[str]) -> list[tuple[str | None, Any]]:
    """Server-sent events as ``(event name or None, parsed data or "[DONE]")``."""
    events: list[tuple[str | None, Any]] = []
    name: str | None = None
    data: list[str] = []
    for line in [*lines, ""]:
        if not line:
            if data:
                payload = "\n".join(data)
                events.append((name, DONE if payload == DONE else json.loads(payload)))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return events
