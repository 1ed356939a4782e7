# keystile: `make run` serves on http://127.0.0.1:8000, `make test` runs every test.
# Both install into .venv first; nothing but Python 3.11+ and a compiler is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Plain-http development: the session cookie cannot be Secure on http://127.0.0.1.
run: install
	KEYSTILE_COOKIE_SECURE=$${KEYSTILE_COOKIE_SECURE:-false} $(BIN)/keystile serve

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench alembic
	$(BIN)/ruff format --check src tests bench alembic
	$(BIN)/mypy --strict src

format: install
	$(BIN)/ruff check --fix src tests bench alembic
	$(BIN)/ruff format src tests bench alembic

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
