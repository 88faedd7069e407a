# Every target creates (once) and reuses the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# checkov pins an old boto3, so it gets a virtual environment of its own (shared/reference/moto.md).
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30

.PHONY: install checkov browser demo up down test test-fast lint bench clean

install: $(INSTALLED)

$(INSTALLED): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

checkov: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: Makefile
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

# The console's browser test drives Debian's Chromium (Playwright's own browser download does not work here).
browser:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

demo: install
	$(BIN)/livetrain demo

# The local stack as a background service (state in .livetrain/local); `up` prints the lines a shell exports.
up: install
	$(BIN)/livetrain local up

down: install
	$(BIN)/livetrain local down

# One pytest worker per core; a module's tests stay on one worker, so its fixtures (a demo, a stack) run once.
# --durations: every run ends with its 15 slowest tests, so the test time has a visible budget.
PYTEST := $(BIN)/python -m pytest -n auto --dist loadfile --durations=15

test: install checkov browser
	$(BIN)/ruff check .
	$(PYTEST)

# The edit loop: lint and every test not marked slow (the end-to-end runs); `make test` is the full gate.
test-fast: install checkov
	$(BIN)/ruff check .
	$(PYTEST) -m "not slow"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .livetrain build *.egg-info
