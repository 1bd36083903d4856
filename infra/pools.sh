#!/usr/bin/env bash
# Create (or update) tagsmith's work pools from the base job templates in infra/pools/.
#
#   infra/pools.sh            # all of them
#   infra/pools.sh local      # tagsmith-local: flow runs as processes on this machine (infra/up.sh)
#   infra/pools.sh k8s        # tagsmith-gpu-k8s: a Kubernetes Job per run, nvidia.com/gpu limits
#   infra/pools.sh docker     # tagsmith-gpu-docker: a container per run with GPU device requests
#
# Talks to the server in PREFECT_API_URL. Workers for k8s/docker pools need prefect-kubernetes /
# prefect-docker installed where they run (not in this project's lock; see infra/README.md):
#   prefect worker start --pool tagsmith-gpu-k8s --type kubernetes
# Preview what a run's job will look like:
#   python -m flows.deployment.deploy render infra/pools/k8s-gpu.json gpu_count=2
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT=${PREFECT:-.venv/bin/prefect}

create() {  # NAME TYPE TEMPLATE
  "$PREFECT" --no-prompt work-pool create "$1" --type "$2" --base-job-template "infra/pools/$3" --overwrite
}

case "${1:-all}" in
  local) create tagsmith-local process process.json ;;
  k8s) create tagsmith-gpu-k8s kubernetes k8s-gpu.json ;;
  docker) create tagsmith-gpu-docker docker docker-gpu.json ;;
  all)
    create tagsmith-local process process.json
    create tagsmith-gpu-k8s kubernetes k8s-gpu.json
    create tagsmith-gpu-docker docker docker-gpu.json
    ;;
  *) echo "usage: $0 [all|local|k8s|docker]" >&2; exit 2 ;;
esac
