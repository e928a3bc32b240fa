# Everything a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DOCS_ASSETS := $(VENV)/share/orderstream/data-docs
export ORDERSTREAM_HOME ?= $(CURDIR)/.orderstream

.PHONY: install browser prometheus lint schemas run test test-faults bench soak stop clean

install: $(VENV)/.installed $(DATA_DOCS_ASSETS)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The stylesheets, scripts and fonts of the Data Docs pages (npm packages pinned by package-lock.json),
# copied into the site when it is built, so that it works offline (orderstream/validation/site_assets.py).
$(DATA_DOCS_ASSETS)/.installed: package.json package-lock.json .npmrc | $(VENV)/.installed
	@command -v npm >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	  else echo "npm is needed for the Data Docs assets: install Node.js and npm" >&2; exit 1; fi; }
	mkdir -p $(DATA_DOCS_ASSETS)
	cp package.json package-lock.json .npmrc $(DATA_DOCS_ASSETS)/
	cd $(DATA_DOCS_ASSETS) && npm ci --no-progress --loglevel=error
	touch $@

run: install
	$(BIN)/orderstream stack up
	$(BIN)/orderstream seed --orders 2000 --invalid-rate 0.02
	$(BIN)/orderstream run

test: install browser prometheus lint
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

# Debian's Prometheus and promtool for the alert rules' tests, which start their own server (not
# the package's service); the tests skip without them.
prometheus:
	@{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
	  else echo "no prometheus: tests/test_alerts.py will skip"; fi; }

# Each topic's JSON Schema from its model (orderstream/events): writes a new version, refuses to
# change a committed one or to break the version before it (tests/test_schemas.py checks the same).
schemas: install
	$(BIN)/python -m orderstream.events.schemas

test-faults: install
	$(BIN)/python -m pytest -m fault -q

# 30 minutes of steady load on `orderstream serve` with the worker and a consumer killed; exit 0 iff it passed
# (flat memory, no healthy run Crashed, both recoveries within 60 s, 0 lost, 0 applied twice).
soak: install
	$(BIN)/orderstream soak --minutes 30

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/orderstream bench --write bench

stop:
	-$(BIN)/orderstream stack down

clean: stop
	rm -rf $(ORDERSTREAM_HOME)
