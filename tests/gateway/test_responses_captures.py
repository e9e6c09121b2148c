"""Held-out fixtures: what real Responses clients sent (captured by the clients helper,
``responses_captures/``, bodies only) must be accepted by the gateway and answered in
a form the openai SDK's types accept — Codex CLI, the Agents SDK, the Vercel AI SDK and
the openai Node SDK, first requests and tool round trips, streamed and not — through a
translated deployment and natively (the fake OpenAI's /v1/responses, which validates the
body against the SDK's ResponseCreateParams)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from openai.types.responses import Response

from tests.factories import key_create, model_create, provider_create
from tests.gateway.test_responses_translate import EVENTS

CAPTURES = Path(__file__).parent / "responses_captures"
NAMES = sorted(p.stem for p in CAPTURES.glob("*.json"))


@pytest.fixture(params=["openai_compatible", "openai"])
def post(request, gateway, fake_upstream):
    """Translated (chat) and native (the fake's /v1/responses) deployments."""
    model_create(
        "m",
        provider_create(fake_upstream.url, api_key="sk-upstream-secret", kind=request.param),
        upstream_model="upstream-m",
    )
    issued = key_create()
    gateway.snapshots.reload()

    def send(body: dict) -> httpx.Response:
        return httpx.post(
            gateway.url + "/v1/responses",
            headers={"authorization": f"Bearer {issued.secret}"},
            json={**body, "model": "m"},
            timeout=30,
        )

    send.upstream = fake_upstream  # type: ignore[attr-defined]
    send.kind = request.param  # type: ignore[attr-defined]
    return send


def final_response(answer: httpx.Response, stream: bool) -> Response:
    assert answer.status_code == 200, answer.text
    if not stream:
        return Response.model_validate(answer.json())
    events = []
    for block in answer.text.split("\n\n"):
        if block.strip():
            data = json.loads(block.split("\n")[1].removeprefix("data: "))
            events.append(EVENTS[data["type"]].model_validate(data))
    assert events[-1].type == "response.completed"
    return events[-1].response


def test_the_captures_are_there():
    assert {"agents-1", "codex-1", "vercel-ai-1", "openai-node-1"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_real_client_request_is_accepted(post, name):
    body = json.loads((CAPTURES / f"{name}.json").read_text())
    native = post.kind == "openai"  # type: ignore[attr-defined]
    built_in = [i for i, t in enumerate(body.get("tools") or ()) if t["type"] == "web_search"]
    if built_in and not native:
        # Codex offers web_search by default: a translated deployment cannot run it, and
        # says so by name (Codex's `web_search = "disabled"` turns it off).
        refused = post(body)
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == f"tools[{built_in[0]}]"
        body["tools"] = [t for t in body["tools"] if t["type"] != "web_search"]
    response = final_response(post(body), bool(body.get("stream")))
    assert response.status == "completed" and response.output
    sent = post.upstream.requests[-1]["json"]  # type: ignore[attr-defined]
    if native:  # the request as sent, but stored by the gateway, not the provider
        assert sent["store"] is False and sent["model"] == "upstream-m"
        assert sent.get("tools") == body.get("tools")
        assert len(sent["input"]) == (1 if isinstance(body["input"], str) else len(body["input"]))
        return
    assert sent["messages"][-1]["role"] in ("user", "tool")
    if body.get("instructions"):
        assert sent["messages"][0] == {"role": "system", "content": body["instructions"]}
    if body.get("tools"):
        assert {t["function"]["name"] for t in sent["tools"]} >= {
            t["name"] for t in body["tools"] if t["type"] == "function"
        }
