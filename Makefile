# Two entry points (see README): `make repro` runs the pipeline, `make test` the test suite.
# Both create the environment in .venv/ first when it is missing or out of date.
PYTHON ?= python3.11
UV_VERSION := 0.13.9
PROFILE ?=
VENV := .venv
# Stage commands in dvc.yaml call `python`/`dvc`: make them the environment's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test browser lint mlflow-ui images stack-up stack-down clean-env

# uv lives in its own small venv (.tools/) so `uv sync` can manage .venv exactly.
.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | .tools/bin/uv
	.tools/bin/uv sync --frozen --python $(PYTHON)
	touch $@

setup: $(VENV)/.synced

# One MLflow parent run per invocation groups the stage runs (pipeline/tracking.py).
repro: setup
	@export STYLEGAN_MOBILE_RUN_GROUP="local-$$(date -u +%Y%m%dT%H%M%SZ)-$$$$"; \
	if [ -n "$(PROFILE)" ]; then \
	  overrides="$$($(VENV)/bin/python -m pipeline.params overrides $(PROFILE))" || exit 2; \
	  eval "dvc exp run $$overrides"; \
	else \
	  dvc repro; \
	fi

# One pytest-xdist worker per core (TEST_WORKERS=1: one process), a test file per worker at a
# time so that module fixtures run once; the slowest 25 tests listed at the end.
TEST_WORKERS ?= auto
test: setup browser
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

# tests/test_mlflow_ui.py drives a headless Chromium: install Debian's when it is missing and
# we can (root, apt-get); never fatal, the test skips itself without a browser.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium + chromium-driver (apt-get) for the MLflow UI test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 \
	         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
	    || echo "could not install chromium: the MLflow UI test will be skipped"; \
	  else echo "no chromium (and not root with apt-get): the MLflow UI test will be skipped"; fi; }

lint: setup
	$(VENV)/bin/ruff check pipeline components dags tests

# The printed link opens the training runs with the headline figures as columns.
mlflow-ui: setup
	@echo "pipeline runs, headline figures as columns: $$(MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlruns/mlflow.db $(VENV)/bin/python -m pipeline.tracking url --ui http://127.0.0.1:5000)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 --port 5000

# The project image (CPU and CUDA variants, infra/Dockerfile) and the team stack (infra/compose.yaml).
IMAGE ?= stylegan-mobile:0.1.0
images:
	docker build -f infra/Dockerfile --target cpu -t $(IMAGE)-cpu .
	docker build -f infra/Dockerfile --target cuda -t $(IMAGE)-cuda .

stack-up:
	docker compose -f infra/compose.yaml up -d

stack-down:
	docker compose -f infra/compose.yaml down

clean-env:
	rm -rf $(VENV) .tools
