#!/usr/bin/env bash
# Runs lint and the whole test suite. Uses PostgreSQL and Redis on 127.0.0.1 when they
# answer (CI requires them: ODOCK_REQUIRE_SERVICES=1); otherwise falls back to SQLite and
# says so loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

pg_up() { "$PY" - <<'PYEOF'
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(s.connect_ex(("127.0.0.1", 5432)))
PYEOF
}

if [ -z "${DATABASE_URL:-}" ]; then
  if pg_up; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/odock"
  elif [ "${ODOCK_REQUIRE_SERVICES:-0}" = "1" ]; then
    echo "PostgreSQL is required (ODOCK_REQUIRE_SERVICES=1) but not reachable" >&2; exit 1
  else
    echo "WARNING: PostgreSQL not reachable on 127.0.0.1:5432; testing on SQLite" >&2
  fi
fi
echo "database: ${DATABASE_URL:-sqlite}"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec "$PY" -m pytest "$@"
