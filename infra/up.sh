#!/usr/bin/env bash
# Local operations, one command: a Prefect server with its UI on 127.0.0.1, the process work pool,
# the deployments of infra/prefect.yaml, and a worker that runs them (`make up`; `make down` stops
# exactly these). Pids go to .tagsmith/run/*.pid, logs to .tagsmith/run/*.log.
#
#   TAGSMITH_PORT=4200            port of the API and UI
#   TAGSMITH_WORKER_LIMIT=3       flow runs the worker runs at once (a sweep holds one slot itself)
#   PREFECT_HOME=.prefect         database (SQLite, .prefect/prefect.db), results, caches
#   PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://USER:PASSWORD@HOST:5432/prefect
#                                 use PostgreSQL instead of SQLite (pass it in the environment,
#                                 never write it into a file of the repository)
#   TAGSMITH_DVC_CACHE=/srv/dvc   a DVC cache shared by all runs (default: this checkout's)
#   TAGSMITH_RESULTS_S3=s3://BUCKET/PREFIX
#                                 keep Prefect's results (the stage caches) in S3, shared with workers
#                                 on other machines (block s3-bucket/tagsmith-results; default: local)
#   TAGSMITH_S3_ENDPOINT=URL      S3-compatible endpoint for that bucket (MinIO, moto)
#
# Runs clone the committed HEAD (see infra/prefect.yaml): commit before `make up`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/.tagsmith/run
PY=${TAGSMITH_PYTHON:-$ROOT/.venv/bin/python}
PORT=${TAGSMITH_PORT:-4200}

export PREFECT_HOME=${PREFECT_HOME:-$ROOT/.prefect}
export PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TF_CPP_MIN_LOG_LEVEL=2
export PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$PORT
export PREFECT_API_URL=http://127.0.0.1:$PORT/api PREFECT_UI_API_URL=http://127.0.0.1:$PORT/api

# dvc.lock is left out: `make demo` writes it and it is not committed (README); runs write their own
if [ -n "$(git status --porcelain -- . ':!dvc.lock')" ] && [ -z "${TAGSMITH_ALLOW_DIRTY:-}" ]; then
  git status --short -- . ':!dvc.lock' >&2
  echo "uncommitted changes: runs clone the committed HEAD; commit first (or TAGSMITH_ALLOW_DIRTY=1)" >&2
  exit 1
fi
mkdir -p "$RUN" "$PREFECT_HOME"
for name in server worker; do
  if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
    echo "tagsmith is already up ($name pid $(cat "$RUN/$name.pid")); infra/down.sh first" >&2
    exit 1
  fi
done

# setsid: each service leads its own process group, so down.sh stops it with all its children
# and nothing else.
setsid "$PY" -m prefect server start --host 127.0.0.1 --port "$PORT" >"$RUN/server.log" 2>&1 &
echo $! >"$RUN/server.pid"
echo "Prefect server starting (pid $(cat "$RUN/server.pid"), log $RUN/server.log)"
for _ in $(seq 1 240); do
  "$PY" - "$PREFECT_API_URL/health" <<'PY' 2>/dev/null && break
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PY
  kill -0 "$(cat "$RUN/server.pid")" 2>/dev/null || { echo "server exited; see $RUN/server.log" >&2; exit 1; }
  sleep 0.5
done

PREFECT="$(dirname "$PY")/prefect" infra/pools.sh local >"$RUN/deploy.log" 2>&1
if ! "$PY" -m prefect --no-prompt deploy --prefect-file infra/prefect.yaml --all >>"$RUN/deploy.log" 2>&1; then
  tail -20 "$RUN/deploy.log" >&2
  echo "deploy failed (the server is up: infra/down.sh stops it)" >&2
  exit 1
fi
grep -o "Deployment '[^']*' successfully created" "$RUN/deploy.log" || true

if [ -n "${TAGSMITH_RESULTS_S3:-}" ]; then
  if ! "$PY" -m flows.cli results-store "$TAGSMITH_RESULTS_S3" ${TAGSMITH_S3_ENDPOINT:+--endpoint-url "$TAGSMITH_S3_ENDPOINT"} >>"$RUN/deploy.log" 2>&1; then
    tail -3 "$RUN/deploy.log" >&2
    echo "result storage $TAGSMITH_RESULTS_S3 unusable (the server is up: infra/down.sh stops it)" >&2
    exit 1
  fi
  export PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=s3-bucket/tagsmith-results  # the worker's runs inherit it
  echo "results:     $TAGSMITH_RESULTS_S3 (block s3-bucket/tagsmith-results)"
fi

setsid "$PY" -m prefect worker start --pool tagsmith-local --limit "${TAGSMITH_WORKER_LIMIT:-3}" \
  --name "tagsmith-local-$(hostname)" >"$RUN/worker.log" 2>&1 &
echo $! >"$RUN/worker.pid"
echo "worker started (pid $(cat "$RUN/worker.pid"), log $RUN/worker.log)"
echo
echo "Prefect UI:  http://127.0.0.1:$PORT"
echo "API:         $PREFECT_API_URL   (export PREFECT_API_URL=$PREFECT_API_URL for the prefect CLI)"
echo "Run now:     prefect deployment run retrain/retrain -p epochs_full=5"
