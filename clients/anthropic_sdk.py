"""The anthropic Python SDK through the gateway: ``messages.count_tokens``, and a request
with extended thinking and ``cache_control`` that must reach the Anthropic-kind fake
unchanged (asserted on the scripted fake's recording).

Prints ``PASS/FAIL anthropic-count-tokens`` and ``PASS/FAIL anthropic-thinking-cache``.
"""

from __future__ import annotations

import sys
from typing import Any

import anthropic
from _common import ANTHROPIC_BASE_URL, API_KEY, TIMEOUT, recorded, verdict

MODEL = "claude-sonnet-5"  # mapped to the Anthropic-kind fake by a model alias
MARK = "odock-thinking-check"
client = anthropic.Anthropic(
    base_url=ANTHROPIC_BASE_URL, api_key=API_KEY, max_retries=0, timeout=TIMEOUT
)


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:400]}"


def count_tokens() -> tuple[str | None, str]:
    try:
        counted = client.messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "How many tokens is this?"}]
        )
    except anthropic.APIError as exc:
        return _error(exc), ""
    if not isinstance(counted.input_tokens, int) or counted.input_tokens <= 0:
        return f"input_tokens {counted.input_tokens!r}", ""
    upstream = any(
        r.get("path") == "/v1/messages/count_tokens" for r in recorded("ODOCK_ANTHROPIC_RECORD")
    )
    who = "the Anthropic-kind upstream" if upstream else "the gateway's estimate"
    return None, f"input_tokens={counted.input_tokens}, counted by {who}"


def thinking_cache() -> tuple[str | None, str]:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    system: Any = [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}]
    block = {"type": "text", "text": f"Say hi. {MARK}", "cache_control": {"type": "ephemeral"}}
    try:
        message = client.messages.create(
            model=MODEL,
            max_tokens=2048,
            thinking=thinking,
            system=system,
            messages=[{"role": "user", "content": [block]}],  # type: ignore[list-item]
        )
    except anthropic.APIError as exc:
        return _error(exc), ""
    sent = [
        r["json"]
        for r in recorded("ODOCK_ANTHROPIC_RECORD")
        if r.get("path") == "/v1/messages" and MARK in str(r.get("json"))
    ]
    if not sent:
        return "the request never reached the Anthropic fake", ""
    upstream = sent[-1]
    if upstream.get("thinking") != thinking:
        return f"thinking arrived as {upstream.get('thinking')!r}", ""
    if (upstream.get("system") or [{}])[0].get("cache_control") != {"type": "ephemeral"}:
        return f"system cache_control lost: {upstream.get('system')!r}"[:300], ""
    content = upstream["messages"][0]["content"]
    if not isinstance(content, list) or content[0].get("cache_control") != {"type": "ephemeral"}:
        return f"message cache_control lost: {content!r}"[:300], ""
    return None, f"thinking + cache_control arrived; answer stop_reason={message.stop_reason}"


if __name__ == "__main__":
    results = [
        verdict("anthropic-count-tokens", *count_tokens()),
        verdict("anthropic-thinking-cache", *thinking_cache()),
    ]
    sys.exit(0 if all(results) else 1)
