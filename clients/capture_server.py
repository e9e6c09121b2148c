"""A tiny upstream that records what real AI clients send and answers just enough to go on.

Used once by hand to capture the requests of Codex, openai-agents, the Vercel AI SDK, the
openai Node SDK and Claude Code (issue 14, /work/helpers/captures/), and kept so the capture
can be redone when a client's pinned version moves:

    .venv/bin/python clients/capture_server.py --name codex --port 8123 --out DIR

Every request is saved as ``DIR/<name>-<n>.json`` (method, path+query, headers with secrets
replaced by ``<redacted>``, JSON body). The answers are minimal but valid wire format, so a
client goes on to its next request: on ``/v1/responses`` (streamed or not) a function call
to the first function tool until the input carries a ``function_call_output``, then text; on
``/v1/messages`` a ``tool_use`` of ``Read`` (path from ``--read-file``) or the first tool
until a ``tool_result`` arrives, then text; ``count_tokens`` and ``/v1/models`` answer too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

SECRET_HEADERS = {"authorization", "x-api-key", "cookie", "openai-organization", "openai-project"}
TEXT = "odock capture: done"


def _sse(event: str, data: dict[str, Any], named: bool = True) -> bytes:
    head = f"event: {event}\n" if named else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _arguments(tool: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy a JSON schema's required properties (a shell-ish command)."""
    schema = tool.get("parameters") or tool.get("input_schema") or {}
    out: dict[str, Any] = {}
    for name in schema.get("required") or list(schema.get("properties") or {})[:1]:
        spec = (schema.get("properties") or {}).get(name, {})
        kind = spec.get("type")
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


class Capture:
    def __init__(self, name: str, out: Path, read_file: str | None) -> None:
        self.name, self.out, self.read_file = name, out, read_file
        self.counter = itertools.count(1)
        self.ids = itertools.count(1)

    def save(self, request: web.Request, raw: bytes) -> dict[str, Any]:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {
            k: ("<redacted>" if k.lower() in SECRET_HEADERS else v)
            for k, v in request.headers.items()
        }
        record = {
            "method": request.method,
            "path": request.path_qs,
            "headers": headers,
            "body": body,
        }
        path = self.out / f"{self.name}-{next(self.counter)}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        return body if isinstance(body, dict) else {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = self.save(request, await request.read())
        path = request.path
        if path.endswith("/responses"):
            return await self.responses(request, body)
        if path.endswith("/messages/count_tokens"):
            return web.json_response({"input_tokens": 42})
        if path.endswith("/messages"):
            return await self.messages(request, body)
        if "/models" in path:
            model = path.rsplit("/", 1)[-1]
            item = {"id": model, "object": "model", "created": 1700000000, "owned_by": "odock"}
            if model == "models":
                return web.json_response({"object": "list", "data": [item | {"id": "gpt-4o"}]})
            return web.json_response(item)
        return web.json_response(
            {"error": {"message": "capture: not served", "type": "invalid_request_error"}},
            status=404,
        )

    # --- OpenAI Responses ---------------------------------------------------------------
    def _response(self, body: dict[str, Any], status: str, output: list[Any]) -> dict[str, Any]:
        return {
            "id": f"resp_capture{next(self.ids)}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": body.get("model", "gpt-4o"),
            "output": output,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "parallel_tool_calls": True,
            "temperature": 1.0,
            "top_p": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": 10,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 15,
            }
            if status == "completed"
            else None,
        }

    def _responses_item(self, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("input") if isinstance(body.get("input"), list) else []
        answered = any(
            isinstance(i, dict) and i.get("type") == "function_call_output" for i in items
        )
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        if tools and not answered:
            tool = tools[0]
            return {
                "type": "function_call",
                "id": "fc_capture1",
                "call_id": "call_capture1",
                "name": tool["name"],
                "arguments": json.dumps(_arguments(tool)),
                "status": "completed",
            }
        return {
            "type": "message",
            "id": "msg_capture1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
        }

    async def responses(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        item = self._responses_item(body)
        if not body.get("stream"):
            return web.json_response(self._response(body, "completed", [item]))
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        seq = itertools.count()
        base = self._response(body, "in_progress", [])

        async def emit(kind: str, **data: Any) -> None:
            await response.write(_sse(kind, {"type": kind, "sequence_number": next(seq), **data}))

        await emit("response.created", response=base)
        await emit("response.in_progress", response=base)
        if item["type"] == "function_call":
            start = item | {"arguments": "", "status": "in_progress"}
            await emit("response.output_item.added", output_index=0, item=start)
            ids = {"item_id": item["id"], "output_index": 0}
            await emit("response.function_call_arguments.delta", **ids, delta=item["arguments"])
            await emit("response.function_call_arguments.done", **ids, arguments=item["arguments"])
        else:
            start = item | {"status": "in_progress", "content": []}
            await emit("response.output_item.added", output_index=0, item=start)
            ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            part = {"type": "output_text", "text": "", "annotations": []}
            await emit("response.content_part.added", **ids, part=part)
            await emit("response.output_text.delta", **ids, delta=TEXT, logprobs=[])
            await emit("response.output_text.done", **ids, text=TEXT, logprobs=[])
            await emit("response.content_part.done", **ids, part=item["content"][0])
        await emit("response.output_item.done", output_index=0, item=item)
        done = base | {"status": "completed", "output": [item]}
        done["usage"] = self._response(body, "completed", [])["usage"]
        await emit("response.completed", response=done)
        await response.write_eof()
        return response

    # --- Anthropic Messages -------------------------------------------------------------
    def _anthropic_tool(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        content = last.get("content") if isinstance(last, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        ):
            return None
        tools = [t for t in body.get("tools") or [] if "input_schema" in t]
        if not tools:
            return None
        names = {t["name"]: t for t in tools}
        if self.read_file and "Read" in names:
            return "Read", {"file_path": self.read_file}
        return tools[0]["name"], _arguments(tools[0])

    async def messages(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        call = self._anthropic_tool(body)
        if call:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": "toolu_capture1",
                "name": call[0],
                "input": call[1],
            }
            stop = "tool_use"
        else:
            block, stop = {"type": "text", "text": TEXT}, "end_turn"
        message = {
            "id": f"msg_capture{next(self.ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude"),
            "content": [block],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
        if not body.get("stream"):
            return web.json_response(message)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        head = message | {"content": [], "stop_reason": None}
        await response.write(_sse("message_start", {"type": "message_start", "message": head}))
        empty = block | ({"input": {}} if call else {"text": ""})
        await response.write(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": empty},
            )
        )
        delta = (
            {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            if call
            else {"type": "text_delta", "text": TEXT}
        )
        await response.write(
            _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
        await response.write(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        await response.write(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 5},
                },
            )
        )
        await response.write(_sse("message_stop", {"type": "message_stop"}))
        await response.write_eof()
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
