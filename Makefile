# The two quick-start commands: `make tune` and `make test`. Each sets up .venv on its own.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: venv tune smoke test lint mlflow-ui clean

# Re-runs only when pyproject.toml changes: quick when the venv is already there.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

tune: venv  ## the main job: the cifar search with its defaults (local Ray, local MLflow store)
	$(PY) run_tune.py --space cifar

smoke: venv  ## a tiny search on a slice of ./data
	$(PY) run_tune.py --space cifar --smoke-test

lint: venv
	$(PY) -m ruff check .

test: lint  ## ruff, then the test suite
	$(PY) -m pytest -q --durations=40

mlflow-ui: venv  ## browse the local MLflow store on http://$(HOST):$(PORT); Ctrl-C stops it and all its workers
	$(PY) -m tuner.tracking.mlflow_ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlartifacts --host $(HOST) --port $(PORT)

clean:
	rm -rf ray_results mlflow.db mlartifacts .pytest_cache .ruff_cache
