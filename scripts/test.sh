#!/usr/bin/env bash
# Runs the whole suite: ruff and the import contracts (pyproject's [tool.importlinter]) over the
# project (before anything starts: they take a second), then
# throwaway PostgreSQL + Redis on loopback, then
#   1. unit and API tests on PostgreSQL (broker in memory, the engine driven in-process),
#   2. end-to-end and browser tests with real celery worker processes on PostgreSQL + Redis,
#   3. the unit tests again on SQLite, the embedded default.
# Extra arguments replace the test selection of step 2 and skip the lint (e.g.
# `scripts/test.sh tests/browser`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SERVICES_DIR="$PWD/.test-services"

status=0
lint_status=0
if [ $# -eq 0 ]; then
  echo "== 0/3 lint (ruff, import layers)"
  $BIN/ruff check . || lint_status=$?
  $BIN/lint-imports --no-cache || lint_status=$?
  status=$lint_status
fi

bash scripts/services.sh start "$SERVICES_DIR"
trap 'bash scripts/services.sh stop "$SERVICES_DIR"' EXIT
# shellcheck disable=SC1091
source "$SERVICES_DIR/env"
export BATCHHUB_DATA_DIR="$SERVICES_DIR/data"
export BATCHHUB_SHARED_DIR="${BATCHHUB_SHARED_DIR:-$(cd .. && pwd)/shared}"
# Every pytest worker and every process a test starts would otherwise recompile the project.
unset PYTHONDONTWRITEBYTECODE

if [ $# -gt 0 ]; then
  CELERY_BROKER_URL="$CELERY_BROKER_URL" $BIN/pytest -p no:cacheprovider "$@" || status=$?
  exit $status
fi

echo "== 1/3 unit + API tests on PostgreSQL"
env -u CELERY_BROKER_URL -u CACHE_URL $BIN/pytest -p no:cacheprovider -q -n 2 -m "not e2e and not browser" || status=$?

echo "== 2/3 end-to-end and browser tests (real workers, PostgreSQL + Redis)"
$BIN/pytest -p no:cacheprovider -q --durations=40 -m "e2e or browser" || status=$?

echo "== 3/3 unit tests on SQLite (the embedded default)"
env -u DATABASE_URL -u CELERY_BROKER_URL -u CACHE_URL $BIN/pytest -p no:cacheprovider -q -n 2 \
  -m "not e2e and not browser and not postgres" || status=$?

# The lint output is at the top of a long log: say again at the end why a green test run failed.
if [ "$lint_status" -ne 0 ]; then
  echo "== FAILED: 0/3 lint (ruff or lint-imports exited $lint_status; findings at the top)"
fi
exit $status
