#!/usr/bin/env bash
# Runs every tests/bench/bench_*.py on a throwaway PostgreSQL + Redis (scripts/services.sh).
# Each benchmark prints one JSON line per figure. BENCH_ROWS sets the input size (default
# 1,000,000; e.g. BENCH_ROWS=20000 for a quick run). A benchmark that fails prints its error and
# the others still run; the exit status is non-zero if any failed. The run ends with one line
# per goal the figures carry: met or missed (tests/bench/goals.py).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SERVICES_DIR="$PWD/.bench-services"

bash scripts/services.sh start "$SERVICES_DIR" || exit 1
trap 'bash scripts/services.sh stop "$SERVICES_DIR"' EXIT
# shellcheck disable=SC1091
source "$SERVICES_DIR/env"
export BATCHHUB_DATA_DIR="$SERVICES_DIR/data"
export BATCHHUB_SHARED_DIR="${BATCHHUB_SHARED_DIR:-$(cd .. && pwd)/shared}"
export BENCH_ROWS="${BENCH_ROWS:-1000000}"
export PYTHONUNBUFFERED=1

psql_admin() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PGPORT" -U postgres -d postgres -c "$1"
}

failed=()
figures="$SERVICES_DIR/figures.jsonl"
: >"$figures"
for script in tests/bench/bench_*.py; do
    name=$(basename "$script" .py)
    # Benchmarks that take BENCH_DATABASE_URL get a database of their own on the same server.
    db="b_${name#bench_}"
    psql_admin "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    psql_admin "CREATE DATABASE $db OWNER batchhub" >/dev/null
    echo "== $name (BENCH_ROWS=$BENCH_ROWS)" >&2
    if ! BENCH_DATABASE_URL="${DATABASE_URL%/*}/$db" $BIN/python "$script" | tee -a "$figures"; then
        echo "!! $name failed" >&2
        failed+=("$name")
    fi
    psql_admin "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
done

# Each goal's verdict, together at the end of minutes of figures.
$BIN/python tests/bench/goals.py "$figures"

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
