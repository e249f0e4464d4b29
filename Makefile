# BatchHub: `make run` starts the site on the embedded default; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench screenshots lint clean install

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# collectstatic hashes and compresses every file again even when none changed (seconds of each
# start): it runs when the installed packages or the project's own static files are newer than
# the last collection.
COLLECTED := $(or $(STATIC_ROOT),$(or $(BATCHHUB_DATA_DIR),var)/static)/staticfiles.json
$(COLLECTED): $(STAMP) $(shell find static -type f)
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

run: $(STAMP)
	@$(BIN)/python -m batchhub.runall check-free $(HOST) $(PORT)
	$(BIN)/python manage.py migrate --noinput
	@$(MAKE) --no-print-directory -s "$(COLLECTED)"
	$(BIN)/python manage.py ensure_admin --url "http://$(HOST):$(PORT)/"
	$(BIN)/python manage.py recover_work
	BATCHHUB_BIND="$(HOST):$(PORT)" PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/python -m batchhub.runall start -f Procfile

# The Debian packages and the Python ones are fetched at the same time: on a fresh machine both
# mostly wait on the network.
test:
	@bash scripts/services.sh install & packages=$$!; \
	$(MAKE) --no-print-directory install; python=$$?; \
	wait $$packages && [ $$python -eq 0 ]
	bash scripts/test.sh

# Unit tests only, on SQLite: no servers needed. Bytecode is written even where the environment
# turns it off: each xdist worker and each interpreter a test starts would compile the project and
# pytest's rewritten test modules anew (they are git-ignored). Work stealing: durations range from
# milliseconds to the schema fuzzing's seconds, and a worker that runs out takes from the other.
test-fast: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q -m "not e2e and not browser and not slow" \
		-n 2 --dist worksteal

bench: $(STAMP)
	bash scripts/services.sh install
	bash scripts/bench.sh

screenshots: $(STAMP)
	bash scripts/services.sh install
	BATCHHUB_SCREENSHOTS=1 bash scripts/test.sh tests/browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) var .test-services *.egg-info
