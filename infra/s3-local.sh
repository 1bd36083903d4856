#!/usr/bin/env bash
# A local S3 endpoint for the demo: moto's server on 127.0.0.1 (state in memory, gone on stop).
#
#   infra/s3-local.sh up     # start it, create the bucket, point this checkout's DVC remote at it
#   infra/s3-local.sh env    # print the environment the registry and DVC need (eval it)
#   infra/s3-local.sh down   # stop exactly the server `up` started, remove the local DVC remote
#
# Fake credentials only: moto accepts any. Nothing here is written into a tracked file: the DVC
# remote goes to .dvc/config.local (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${TAGSMITH_S3_PORT:-5555}
BUCKET=${TAGSMITH_S3_BUCKET:-tagsmith}
RUN=.tagsmith/run
PY=${TAGSMITH_PYTHON:-.venv/bin/python}
ENDPOINT=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} AWS_ENDPOINT_URL=$ENDPOINT

case "${1:-}" in
  up)
    mkdir -p "$RUN"
    if [ -f "$RUN/s3.pid" ] && kill -0 "$(cat "$RUN/s3.pid")" 2>/dev/null; then
      echo "S3 endpoint already running at $ENDPOINT (pid $(cat "$RUN/s3.pid"))"
    else
      setsid "$PY" -m moto.server -H 127.0.0.1 -p "$PORT" > "$RUN/s3.log" 2>&1 &
      echo $! > "$RUN/s3.pid"
      for _ in $(seq 60); do
        curl -sf "$ENDPOINT/moto-api/" > /dev/null 2>&1 && break
        sleep 0.5
      done
    fi
    "$PY" -c "import boto3; boto3.client('s3').create_bucket(Bucket='$BUCKET')" 2>/dev/null || true
    "$PY" -m dvc remote add --local --force --default s3local "s3://$BUCKET/dvc" > /dev/null
    "$PY" -m dvc remote modify --local s3local endpointurl "$ENDPOINT"
    echo "S3 endpoint: $ENDPOINT  bucket: $BUCKET  (DVC remote 's3local' in .dvc/config.local)"
    ;;
  env)
    echo "export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    echo "export AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION AWS_ENDPOINT_URL=$ENDPOINT"
    ;;
  down)
    if [ -f "$RUN/s3.pid" ]; then
      kill "$(cat "$RUN/s3.pid")" 2>/dev/null || true
      rm -f "$RUN/s3.pid"
    fi
    "$PY" -m dvc remote remove --local s3local > /dev/null 2>&1 || true
    echo "S3 endpoint stopped"
    ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
