# tagsmith — two commands do all set-up on a fresh machine with Python 3.11 and make:
#   make demo   generate the embedded dataset and run the whole retraining pipeline on it
#               (EfficientNet-Lite0 from ImageNet; make demo-scratch: a small CNN from scratch)
#   make test   run the test suite
# Both install uv (into .tools/, from PyPI) and the locked dependencies (uv.lock) if missing.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen --no-sync

# Prefect keeps its database, results and caches inside the checkout unless told otherwise.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
# Every stage is a fresh Python process: let it reuse compiled bytecode.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup data demo demo-scratch demo-imagenet demo-s3 demo-nightly s3-down test bench bench-summary gpu-wheels up down

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==0.13.9"

# --compile-bytecode: every stage and flow run is a fresh process; without .pyc files (uv writes
# none by default) each one compiles Prefect's and DVC's sources again where bytecode cannot be written.
.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

setup: .venv/.synced

# The embedded dataset is generated, not downloaded; data.dvc records what the generator writes.
# `dvc commit` puts it into the DVC cache (deployments' workspaces check it out from there); if the
# generator wrote something else than data.dvc records, data.dvc changes and git shows it.
data: setup
	@if [ -f data/labels.tsv ] && $(RUN) dvc status data.dvc 2>/dev/null | grep -q "up to date"; then \
	  echo "data/ already matches data.dvc"; \
	else \
	  $(RUN) tagsmith data --preset demo && $(RUN) dvc commit --force --quiet data.dvc && \
	  { git diff --quiet -- data.dvc && echo "data/ matches data.dvc (now in the DVC cache)" || \
	    echo "WARNING: the generated data/ differs from the committed data.dvc (git diff data.dvc)"; }; \
	fi

demo: data
	$(RUN) tagsmith retrain

# The same pipeline from scratch: the small CNN with the recipe of flows/bridge/recipes.py. Like
# every run option it is written into params.yaml (git diff shows it; `git checkout params.yaml`
# goes back to the ImageNet demo). demo-imagenet is `make demo` by name.
demo-scratch: data
	$(RUN) tagsmith retrain --recipe small_cnn-scratch

demo-imagenet: data
	$(RUN) tagsmith retrain --recipe efficientnet_lite0-imagenet

# The demo against a local S3 endpoint (moto on 127.0.0.1:5555): the registry and the DVC remote
# (with each stage's run-cache) live there. Writes registry.store
# into params.yaml, as any run parameter does. List it: see the README.
S3_BUCKET ?= tagsmith
demo-s3: data
	infra/s3-local.sh up
	eval "$$(infra/s3-local.sh env)" && $(RUN) tagsmith retrain \
	  --set registry.store=s3://$(S3_BUCKET)/registry

# Three nights of the recurring loop against the local S3 endpoint, in a fresh repository under
# .tagsmith/demo-nightly (README: "Three nights"). DEMO_NIGHTLY: options, e.g. "--preset tiny".
demo-nightly: setup
	infra/s3-local.sh up
	eval "$$(infra/s3-local.sh env)" && $(RUN) python -m flows.demo_nightly $(DEMO_NIGHTLY)

s3-down:
	infra/s3-local.sh down

# Two pytest-xdist workers: much of an end-to-end test's time is one process waiting on another
# (a server, a worker's poll, a stage's start), so a second file runs meanwhile. Each test file
# (or group of files sharing a fixture: tests/conftest.py) runs whole on one worker.
TEST_WORKERS ?= 2
test: setup
	$(RUN) pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# Results go to benchmarks/results only from a clean tree: `make bench ALLOW_DIRTY=1` overrides
# (the files then say so). BENCH picks benchmarks and options, e.g. BENCH="input --reps 5".
bench: setup
	$(RUN) python -m benchmarks.run $(if $(ALLOW_DIRTY),--allow-dirty) $(BENCH)

# SUMMARY.md and the README's benchmark table, regenerated from the result files.
bench-summary: setup
	$(RUN) python -m benchmarks.summary

# The wheels benchmarks/gpu_jax.py needs on the GPU machine (Keras and what it imports), into .whl/.
gpu-wheels: setup
	PIP_PYTHON="$(shell command -v $(PYTHON))" $(RUN) python -m benchmarks.gpu_wheels

# Local operations: a Prefect server on 127.0.0.1, a process pool, the deployments of
# infra/prefect.yaml and a worker; `make down` stops exactly what `make up` started.
up: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" infra/up.sh

down:
	PATH="$(CURDIR)/.venv/bin:$$PATH" infra/down.sh
