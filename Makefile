# trackrelay: one command runs the demo (make demo), one passes the tests (make test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv setup setup-e2e test test-e2e e2e-cluster e2e-down lint chart-docs demo up cluster-tools bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# setuptools' notice that an editable install of two package roots uses a finder
	# is information, not a warning: the install prints nothing else
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet \
	  --constraint requirements.lock -e '.[dev,operator]'
	touch $(STAMP)

# What the suites need from the machine (Debian packages as root, the control-plane
# binaries), once; elsewhere it stops with the command to run. tests/setup.sh says more.
setup:
	tests/setup.sh

setup-e2e:
	tests/setup.sh --e2e

# Every test but e2e; a missing prerequisite stops the run, a skipped test fails it.
# Two workers, one test file each at a time: most tests wait on processes, not the CPU.
TEST_WORKERS ?= 2
test: setup venv
	PATH="$$(tests/cluster/control-plane.sh --print):$$PATH" $(BIN)/pytest -q -m "not e2e" \
	  -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

# The e2e tier: a kind cluster with a node image built here (root, podman, mmdebstrap).
e2e-cluster: setup-e2e
	tests/e2e/kind-cluster.sh up

e2e-down:
	tests/e2e/kind-cluster.sh down

test-e2e: setup-e2e venv e2e-cluster
	$(BIN)/pytest -q -m e2e tests/e2e $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check services operator tests benchmarks
	$(BIN)/ruff format --check services operator tests benchmarks
	$(BIN)/mypy --strict services operator tests benchmarks
	$(BIN)/lint-imports

# The chart's README and values.schema.json descriptions and defaults, from the comments in
# charts/trackrelay/values.yaml (tests/unit/test_chart_docs.py checks they are current).
chart-docs: venv
	$(BIN)/python -m tests.support.chart_docs

demo: venv
	$(BIN)/trackrelay demo

up: venv
	$(BIN)/trackrelay up

cluster-tools:
	tests/cluster/control-plane.sh

bench: venv
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python benchmarks/order_path.py
	$(BIN)/python benchmarks/forwarder.py
	$(BIN)/python benchmarks/relay_fsync.py
	$(BIN)/python benchmarks/relay.py
	$(BIN)/python benchmarks/freshness.py
	$(BIN)/python benchmarks/drain.py
	$(BIN)/python benchmarks/adaptive.py
	$(BIN)/python benchmarks/shedding.py
	$(BIN)/python benchmarks/control.py
	$(BIN)/python benchmarks/shards.py

clean:
	rm -rf $(VENV) .trackrelay demo-report .pytest_cache .mypy_cache .ruff_cache
