#!/usr/bin/env bash
# Create (or update) tagsmith's work pools from the base job templates in infra/pools/.
#
#   infra/pools.sh            # all of them
#   infra/pools.sh local      # tagsmith-local: flow runs as processes on this machine (infra/up.sh)
#   infra/pools.sh k8s        # tagsmith-gpu-k8s: a Kubernetes Job per run, nvidia.com/gpu limits
#   infra/pools.sh k8s-cpu    # tagsmith-cpu-k8s: a Kubernetes Job per run on CPU nodes (the parent retrain flow)
#   infra/pools.sh docker     # tagsmith-gpu-docker: a container per run with GPU device requests
#
# Talks to the server in PREFECT_API_URL. The templates were written and validated
# (tests/code/test_pool_manifests.py) for the prefect-kubernetes / prefect-docker versions pinned in
# pyproject.toml's `infra` extra; this script installs that extra (from uv.lock) and runs Prefect
# from it. Start a pool's worker the same way, where it runs:
#   uv run --frozen --extra infra prefect worker start --pool tagsmith-gpu-k8s --type kubernetes
# Preview what a run's job will look like:
#   python -m flows.deployment.deploy render infra/pools/k8s-gpu.json gpu_count=2
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo .tools/bin/uv)}

needs_workers=true
[ "${1:-all}" = local ] && needs_workers=false
if [ -z "${PREFECT:-}" ]; then
  if $needs_workers; then
    "$UV" sync --frozen --inexact --extra infra --quiet  # the pinned worker packages, nothing else changes
  fi
  PREFECT=.venv/bin/prefect
fi

create() {  # NAME TYPE TEMPLATE
  "$PREFECT" --no-prompt work-pool create "$1" --type "$2" --base-job-template "infra/pools/$3" --overwrite
}

case "${1:-all}" in
  local) create tagsmith-local process process.json ;;
  k8s) create tagsmith-gpu-k8s kubernetes k8s-gpu.json ;;
  k8s-cpu) create tagsmith-cpu-k8s kubernetes k8s-cpu.json ;;
  docker) create tagsmith-gpu-docker docker docker-gpu.json ;;
  all)
    create tagsmith-local process process.json
    create tagsmith-cpu-k8s kubernetes k8s-cpu.json
    create tagsmith-gpu-k8s kubernetes k8s-gpu.json
    create tagsmith-gpu-docker docker docker-gpu.json
    ;;
  *) echo "usage: $0 [all|local|k8s|k8s-cpu|docker]" >&2; exit 2 ;;
esac
