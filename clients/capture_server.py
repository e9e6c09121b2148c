"""A tiny upstream that records what real AI clients send and answers just enough to go on.

Used by hand to capture the requests of Codex, openai-agents, the Vercel AI SDK, the openai
Node SDK and Claude Code (issue 14, /work/helpers/captures/), and kept so the capture can be
redone when a client's pinned version moves:

    .venv/bin/python clients/capture_server.py --name codex --port 8123 --out DIR

Every request is saved as ``DIR/<name>-<n>.json`` (method, path+query, headers with secrets
replaced by ``<redacted>``, the JSON body). Answers are minimal but valid wire format (the
builders of fakes/scripted.py), so a client goes on to its tool round trip: on
``/v1/responses`` (streamed or not) a call of the first function tool (arguments made up
from its schema) until the input carries a ``function_call_output``, then text; on
``/v1/messages`` a ``tool_use`` of ``Read`` (path from ``--read-file``) or the first tool
until a ``tool_result`` arrives, then text; ``count_tokens`` and ``/v1/models`` answer too.
Unlike the fakes it accepts any key and validates nothing: it is a microphone.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from fakes.scripted import (
    anthropic_message,
    anthropic_stream,
    responses_item,
    responses_object,
    responses_stream,
)

SECRET_HEADERS = {"authorization", "x-api-key", "cookie", "openai-organization", "openai-project"}
TEXT = "odock capture: done"


def _arguments(tool: dict[str, Any]) -> dict[str, Any]:
    """Arguments satisfying a JSON schema's required properties (a shell-ish command)."""
    schema = tool.get("parameters") or tool.get("input_schema") or {}
    properties = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for name in schema.get("required") or list(properties)[:1]:
        kind = properties.get(name, {}).get("type")
        if kind == "array":
            out[name] = ["echo", "odock-ok"]
        elif kind in ("integer", "number"):
            out[name] = 1
        elif kind == "boolean":
            out[name] = False
        elif kind == "object":
            out[name] = {}
        else:
            out[name] = "echo odock-ok" if "cmd" in name or "command" in name else "Paris"
    return out


def _answered(items: Any, kinds: tuple[str, ...]) -> bool:
    return isinstance(items, list) and any(
        isinstance(i, dict) and i.get("type") in kinds for i in items
    )


class Capture:
    def __init__(self, name: str, out: Path, read_file: str | None) -> None:
        self.name, self.out, self.read_file = name, out, read_file
        self.counter = itertools.count(1)

    def save(self, request: web.Request, raw: bytes) -> dict[str, Any]:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {
            k: ("<redacted>" if k.lower() in SECRET_HEADERS else v)
            for k, v in request.headers.items()
        }
        record = {"method": request.method, "path": request.path_qs, "headers": headers}
        path = self.out / f"{self.name}-{next(self.counter)}.json"
        path.write_text(json.dumps(record | {"body": body}, indent=2) + "\n")
        return body if isinstance(body, dict) else {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = self.save(request, await request.read())
        path, model = request.path, str(body.get("model") or "model")
        if path.endswith("/responses"):
            tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
            done = _answered(body.get("input"), ("function_call_output",))
            call = (tools[0]["name"], _arguments(tools[0])) if tools and not done else None
            item = responses_item(call, TEXT)
            if body.get("stream"):
                return await self.stream(request, responses_stream(model, item))
            return web.json_response(responses_object(model, [item], "completed"))
        if path.endswith("/messages/count_tokens"):
            return web.json_response({"input_tokens": 42})
        if path.endswith("/messages"):
            message = anthropic_message(model, self.anthropic_call(body), TEXT)
            if body.get("stream"):
                return await self.stream(request, anthropic_stream(message))
            return web.json_response(message)
        if "/models" in path:
            item = {"id": path.rsplit("/", 1)[-1], "object": "model", "owned_by": "odock"}
            item["created"] = 1700000000
            if item["id"] == "models":
                return web.json_response({"object": "list", "data": [item | {"id": "gpt-4o"}]})
            return web.json_response(item)
        error = {"message": "capture: not served", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=404)

    def anthropic_call(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        messages = body.get("messages") or []
        last = messages[-1].get("content") if messages else None
        tools = [t for t in body.get("tools") or [] if "input_schema" in t]
        if _answered(last, ("tool_result",)) or not tools:
            return None
        if self.read_file and any(t["name"] == "Read" for t in tools):
            return "Read", {"file_path": self.read_file}
        return tools[0]["name"], _arguments(tools[0])

    @staticmethod
    async def stream(request: web.Request, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--name", required=True, help="file prefix: the client's name")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--read-file", help="the path a Read tool_use asks for (Claude Code)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    capture = Capture(args.name, args.out, args.read_file)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", capture.handle)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
