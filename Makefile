# The task index: `make help` lists the targets. `make test` is what .ci/run calls.

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := apps config deploy django_websocket tests manage.py

.DEFAULT_GOAL := help
.PHONY: help run deps test repeat lint types fmt bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z]+:.*## / {printf "  %-6s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PYTHON):
	python3 -m venv $(VENV)

# Reinstalls only when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt | $(PYTHON)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(STAMP) ## Create .venv if missing, install, migrate, serve on 127.0.0.1:8000
	$(PYTHON) manage.py migrate
	$(PYTHON) manage.py runserver 127.0.0.1:8000

deps: ## Install the Debian packages the tests need (browser, Redis, nginx, PostgreSQL)
	@bash tests/system-packages.sh

test: deps lint ## Install what is missing, lint, then run the whole suite (what CI runs)
	PYTHONDEVMODE=1 $(PYTHON) -m pytest

# make repeat TESTS="path::test_name" N=200: one test, N times, to hunt flakes
repeat: deps $(STAMP) ## Run TESTS N times (default 200) and count the failures
	PYTHONDEVMODE=1 $(PYTHON) -m pytest -p tests.repeat --repeat $(or $(N),200) -q $(TESTS)

lint: $(STAMP) types ## Formatting, lint rules, types, Django checks, spelling
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m ruff check .
	$(PYTHON) manage.py check
	$(PYTHON) manage.py makemigrations --check --dry-run
	$(VENV)/bin/codespell $(SOURCES) templates static README.md

types: $(STAMP) ## mypy --strict on the library, the apps and the settings
	$(PYTHON) -m mypy django_websocket apps config

fmt: $(STAMP) ## Format and autofix with ruff
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

bench: $(STAMP) ## Benchmark against the peers (bench/run.py; add ARGS=--quick)
	$(PYTHON) bench/run.py $(ARGS)

clean: ## Remove caches and generated files (keeps .venv and db.sqlite3)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage htmlcov staticfiles test-results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
