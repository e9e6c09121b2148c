"""Azure's one departure from OpenAI's stream: its leading prompt-filter event. Pure.

Azure OpenAI opens a stream with an event that is not a ``chat.completion.chunk``:
``{"choices": [], "id": "", "object": "", "created": 0, "model": "",
"prompt_filter_results": [...]}``. Passed through, an OpenAI client receives a chunk whose
``object``, ``id`` and ``model`` are empty strings (OpenAI's spec refuses it; clients that
key on ``object`` or index ``choices[0]`` break). Dropping it would lose the prompt's
content-filter results, which compliance teams on Azure read. So the event is held and its
``prompt_filter_results`` put on the first real chunk instead: every chunk the client gets
is OpenAI's shape, and Azure's documented extension keys (``prompt_filter_results``,
``content_filter_results``) are kept, as in Azure's non-streamed answers.
"""

from __future__ import annotations

from typing import Any

import orjson

from apps.gateway.providers.openai.translate import OpenAIStreamTranslator

_PROMPT_FILTER_KEY = b'"prompt_filter_results"'
_DATA = b"data: "


def _payload(event: bytes) -> Any:
    """The JSON of a one-line ``data:`` event (``None`` if it is not one)."""
    if not event.startswith(b"data:"):
        return None
    try:
        return orjson.loads(event[5:])
    except orjson.JSONDecodeError:
        return None


def _filter_only(event: bytes) -> dict[str, Any] | None:
    """The parsed event if it is Azure's prompt-filter-only event, else ``None``."""
    if _PROMPT_FILTER_KEY not in event:
        return None
    parsed = _payload(event)
    if not isinstance(parsed, dict) or parsed.get("choices") or parsed.get("usage"):
        return None
    if parsed.get("object") == "chat.completion.chunk":
        return None
    return parsed


class AzureStreamTranslator(OpenAIStreamTranslator):
    """OpenAI's pass-through, with Azure's leading prompt-filter event folded into the
    first chunk (see the module docstring)."""

    __slots__ = ("_held", "_seen_chunk")

    def __init__(self, *, include_usage: bool, public_model: str) -> None:
        super().__init__(include_usage=include_usage, public_model=public_model)
        self._held: Any = None  # the prompt_filter_results waiting for the first chunk
        self._seen_chunk = False

    def feed_event(self, event: bytes) -> bytes:
        if not self._seen_chunk and not event.startswith(b"data: [DONE]"):
            held = _filter_only(event)
            if held is not None:
                self._held = held.get("prompt_filter_results")
                return b""
            self._seen_chunk = True
            if self._held is not None:
                event = self._with_held(event)
        return super().feed_event(event)

    def _with_held(self, event: bytes) -> bytes:
        chunk = _payload(event)
        if not isinstance(chunk, dict) or "choices" not in chunk:
            return event  # not a chunk (an error event): nothing to attach to
        chunk["prompt_filter_results"] = self._held
        self._held = None
        return _DATA + orjson.dumps(chunk)
