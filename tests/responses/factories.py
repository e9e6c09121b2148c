"""Stored responses as ``POST /v1/responses`` keeps them: a Response object that the
openai SDK parses, with input and output items carrying ids."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from apps.gateway.response_store import StoredResponse

_seq = itertools.count(1)


def response_id() -> str:
    return "resp_" + os.urandom(12).hex()


def user_item(text: str) -> dict[str, Any]:
    return {
        "id": f"msg_in{next(_seq)}",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def response_object(
    rid: str, model: str, text: str, *, previous: str | None = None, created: float | None = None
) -> dict[str, Any]:
    """OpenAI's Response object (the spec's retrieve example's fields)."""
    return {
        "id": rid,
        "object": "response",
        "created_at": int(created or time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": f"msg_out{next(_seq)}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": previous,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 8,
        },
        "user": None,
        "metadata": {},
    }


def stored_make(
    key,
    *,
    text: str = "hello",
    answer: str = "hi there",
    previous: str | None = None,
    created: float | None = None,
    model: str = "gpt-4o-mini",
    rid: str | None = None,
    items: list[dict[str, Any]] | None = None,
) -> StoredResponse:
    """A stored turn of ``key`` (an ``apps.keys`` VirtualKey), its ids from the key."""
    rid = rid or response_id()
    # Milliseconds: what survives the round trip through a timestamp column exactly.
    created = created if created is not None else round(time.time(), 3)
    project = key.project
    return StoredResponse(
        id=rid,
        org_id=project.team.organization_id,
        key_id=key.pk,
        project_id=project.pk,
        model=model,
        response=response_object(rid, model, answer, previous=previous, created=created),
        input_items=items if items is not None else [user_item(text)],
        previous_response_id=previous,
        created_at=created,
        instructions="be brief",
        metadata={"ticket": "T-1"},
    )


def chain_make(key, turns: int) -> list[StoredResponse]:
    """``turns`` responses, each continuing the previous one."""
    chain: list[StoredResponse] = []
    previous = None
    for n in range(turns):
        stored = stored_make(key, text=f"q{n}", answer=f"a{n}", previous=previous)
        chain.append(stored)
        previous = stored.id
    return chain
