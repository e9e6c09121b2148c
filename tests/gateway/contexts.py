"""A bare request context for unit tests of stages, records and adapters (no server)."""

from __future__ import annotations

from typing import Any

from apps.gateway.context import RequestContext
from apps.gateway.snapshot import Snapshot


def bare_context(**fields: Any) -> RequestContext:
    """A chat-completions context on an empty snapshot; ``fields`` override any argument."""
    values: dict[str, Any] = {
        "request_id": "req_1",
        "endpoint": "chat.completions",
        "method": "POST",
        "path": "/v1/chat/completions",
        "scope": {},
        "receive": None,
        "send": None,
        "snapshot": Snapshot.empty(),
        "started": 0.0,
        "started_wall": 0.0,
    }
    values.update(fields)
    return RequestContext(**values)
