# Everything a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ORDERSTREAM_HOME ?= $(CURDIR)/.orderstream

.PHONY: install run test test-faults bench stop clean

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

test: install
	$(BIN)/python -m pytest -m "unit or integration" -q

test-faults: install
	$(BIN)/python -m pytest -m fault -q

bench: install
	$(BIN)/orderstream bench

stop:
	-$(BIN)/orderstream stack down

clean: stop
	rm -rf $(ORDERSTREAM_HOME)
