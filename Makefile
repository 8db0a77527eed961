# dmp-faust: `make demo` to see it run, `make test` to check it. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system demo test lint unit integration bench chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/dmp-faust kafka fetch
	touch $(STAMP)

demo: install
	$(BIN)/dmp-faust demo

lint: install
	$(BIN)/ruff check dmp_faust agents tables tests
	$(BIN)/ruff format --check dmp_faust agents tables tests
	$(BIN)/mypy dmp_faust/domain

unit: install
	$(BIN)/pytest tests/unit -q

integration: install
	$(BIN)/pytest tests/integration -q

# Debian packages the tests drive for real: Prometheus (server and promtool) and
# headless Chromium (the dashboard test). Installed with apt-get where missing.
SYSTEM_COMMANDS := prometheus:prometheus promtool:prometheus chromium:chromium
system:
	@missing=""; for pair in $(SYSTEM_COMMANDS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; \
	fi

# The whole suite: lint, then unit and integration tests in one pytest run.
# The integration tests start their own Kafka broker and stop it at the end.
test: lint system
	$(BIN)/pytest tests -q -p no:cacheprovider

# Throughput, latency, memory and recovery on a broker of its own; writes bench/RESULTS.md.
# BENCH_EVENTS (default 1000000), BENCH_PROFILES, ...: see bench/run.py.
bench: install
	$(BIN)/python -m bench.run

# Kills, a lost worker and a broker restart under load; compares every table with an
# independent count. CHAOS_EVENTS (default 200000), DMP_PROCESSING_GUARANTEE: see tests/chaos.
chaos: install
	$(BIN)/python -m tests.chaos

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info
