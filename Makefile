PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CDP_DB ?= ./cdp.db
export CDP_DB

.PHONY: install run test lint format bench clean browsers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Migrate, load the sample data if the store is empty, start the API and the scheduler.
run: $(STAMP)
	$(BIN)/cdp migrate
	$(BIN)/cdp demo load --if-empty
	$(BIN)/cdp serve --dev-keys

## What the browser tests need beside the venv: Debian's Chromium and npm (the SDK bundles come from npm at test time).
browsers:
	@missing=""; [ -x /usr/bin/chromium ] || missing="chromium"; command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## The whole test suite (what CI runs).
test: $(STAMP) browsers
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check cdp api tests bench
	$(BIN)/ruff format --check cdp api tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format cdp api tests bench
	$(BIN)/ruff check --fix cdp api tests bench

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
