# Quick start: `make run` (set-up + the default pipeline) and `make test` (set-up + the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup run test smoke bench clean mlflow-server

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned: 2.13.0 is a CPU build on these machines; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# dvc repro with the project's MLflow store served for its length: each stage then skips opening the SQL store
# (about a second a stage); plain `dvc repro` works the same without it.
run: setup
	@start=$$(date +%s); $(OFFLINE) loramerge mlflow-server --during dvc repro && $(OFFLINE) loramerge done --seconds $$(( $$(date +%s) - start ))

# The integration tests run the real pipeline on the real task data: without it `make test` stops here, naming the folder.
DATA_DIR := $(or $(LORAMERGE_DATA_DIR),../shared/data)

test: setup
	@test -f "$(DATA_DIR)/emotion/train.csv" || { echo "make test: no task data at $(DATA_DIR) (expected <task>/train.csv, see its README.md); put ../shared/data beside the checkout or set LORAMERGE_DATA_DIR" >&2; exit 2; }
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "chromium not installed: the browser test will be skipped"
	test -x /usr/sbin/sshd || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server) \
		>/dev/null 2>&1 || echo "openssh-server not installed: the SSH remote test will fail"
	$(VENV)/bin/ruff check loramerge tests benchmarks && $(VENV)/bin/ruff format --check loramerge tests benchmarks
	$(OFFLINE) $(PY) -m pytest -n 2 -ra --durations=15  # two workers, grouped in tests/conftest.py; the slowest tests, to keep the suite inside its time

# Benchmarks (benchmarks/*.py) into reports/benchmarks.md; needs the default pipeline's outputs (`make run`).
bench: setup
	$(OFFLINE) $(PY) -m benchmarks.run_all

smoke: setup
	$(OFFLINE) $(PY) -m tests.sandbox --run

# The project's MLflow store served on 127.0.0.1:$(MLFLOW_PORT); stages reach it with
# MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT). MLFLOW_BACKEND_STORE_URI=postgresql://… for PostgreSQL.
MLFLOW_PORT ?= 5000
mlflow-server: setup
	loramerge mlflow-server --port $(MLFLOW_PORT) $(if $(MLFLOW_BACKEND_STORE_URI),--backend-store-uri '$(MLFLOW_BACKEND_STORE_URI)')

clean:
	rm -rf $(VENV) *.egg-info
