# Everything a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ORDERSTREAM_HOME ?= $(CURDIR)/.orderstream

.PHONY: install browser lint run test test-faults bench stop clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/orderstream stack up
	$(BIN)/orderstream seed --orders 2000 --invalid-rate 0.02
	$(BIN)/orderstream run

test: install browser lint
	$(BIN)/python -m pytest -m "unit or integration" -q

# The habits the code keeps: lint and import order, the layers, types (configured in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# Debian's Chromium for the UI check (no browser downloads); the test skips without it.
browser:
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no chromium: tests/test_browser.py will skip"; fi; }

test-faults: install
	$(BIN)/python -m pytest -m fault -q

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/orderstream bench --write bench

stop:
	-$(BIN)/orderstream stack down

clean: stop
	rm -rf $(ORDERSTREAM_HOME)
