PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-runtime
CDP_DB ?= ./cdp.db
export CDP_DB
# `make run` is for local use: webhooks may go to a receiver on this machine (see README, Webhooks).
run: export CDP_WEBHOOKS_ALLOW_PRIVATE_URLS ?= true

.PHONY: install run test lint format bench clean browsers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make run` needs the runtime dependencies only (a venv that already has the dev set will do).
$(RUN_STAMP): pyproject.toml
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $@; else \
		$(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet -e . && touch $@; fi

## The development environment (runtime, Spark, test and lint tools).
install: $(STAMP)

## Migrate, load the sample data if the store is empty, start the API and the scheduler.
run: $(RUN_STAMP)
	$(BIN)/cdp migrate
	$(BIN)/cdp demo load --if-empty
	$(BIN)/cdp serve --dev-keys

## What the browser tests need beside the venv: Debian's Chromium and npm (the SDK bundles come from npm at test time).
browsers:
	@missing=""; [ -x /usr/bin/chromium ] || missing="chromium"; command -v npm >/dev/null || missing="$$missing npm"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## The whole test suite (what CI runs); installs Chromium, npm and curl with apt-get when missing.
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
