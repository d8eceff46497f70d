# Two entry points (see README): `make repro` runs the pipeline, `make test` the test suite.
# Both create the environment in .venv/ first when it is missing or out of date.
PYTHON ?= python3.11
UV_VERSION := 0.13.9
PROFILE ?=
VENV := .venv
# Stage commands in dvc.yaml call `python`/`dvc`: make them the environment's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test lint mlflow-ui clean-env

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

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check pipeline components dags tests

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 --port 5000

clean-env:
	rm -rf $(VENV) .tools
