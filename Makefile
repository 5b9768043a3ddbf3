# POS Gateway: `make run` serves a demo on http://127.0.0.1:8000, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
# `PORT=8001 make run` serves the demo on another port.
PORT ?= 8000
# The demo's keys, kept between runs (git-ignored, readable only by you); `make demo-reset`.
DEMO_KEYS ?= .demo-keys.json
# The demo server's SECRET_KEY, made once at random and kept (git-ignored, readable only by you):
# never the public development key, so `DEBUG=0 make run` starts too. SECRET_KEY=... overrides.
DEMO_SECRET_KEY ?= .demo-secret-key
# daphne (default) or uvicorn: `make run SERVER=uvicorn`, `make test-uvicorn`.
SERVER ?= daphne

.PHONY: install install-run run run-port-free demo-reset test test-uvicorn lint format node-deps browser screenshots clean bench bench-smoke

# Two installs, each with its stamp: `make run` needs the server alone (plus the uvicorn extra
# with SERVER=uvicorn); test, lint, test-uvicorn and bench need the dev extra (test tools and
# linters). The dev install holds everything `make run` needs, so after it `make run` installs
# nothing; after `make run`, `make test` still installs the test tools.
DEV_STAMP := $(VENV)/.installed-dev
RUN_EXTRA := $(if $(filter uvicorn,$(SERVER)),[uvicorn])
RUN_STAMP := $(VENV)/.installed-run$(if $(RUN_EXTRA),-uvicorn)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(RUN_STAMP): pyproject.toml | $(PY)
	@if [ $(DEV_STAMP) -nt pyproject.toml ]; then \
		echo "the dev install already has what the server needs"; \
	else $(PY) -m pip install --quiet -e '.$(RUN_EXTRA)'; fi
	touch $@

# The test tools and linters (what `make test` uses); `make install-run` is the server alone.
install: $(DEV_STAMP)

install-run: $(RUN_STAMP)

# Node and the npm `ws` package run the seed's own JavaScript examples in the suite; the npm
# `axe-core` package is injected from node_modules into the dashboard's pages by its accessibility
# tests (tests/dashboard/test_accessibility.py).
tests/node/node_modules/.installed: tests/node/package.json tests/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/node --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the Node and accessibility tests will be skipped"; fi

node-deps: tests/node/node_modules/.installed

# The dashboard's browser tests drive Debian's chromium (Playwright never downloads a browser).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
		else echo "chromium not found: the browser tests will be skipped (a failure under CI=true)"; fi; \
	fi

# The demo: the store is made once and its keys kept in $(DEMO_KEYS), printed on each start; a
# taken port stops it first, before anything is installed, migrated or re-keyed; one line says
# "ready" with the URLs once the server listens (the server then runs in this shell's place).
run: run-port-free install-run $(DEMO_SECRET_KEY)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py demo_setup --keys-file $(DEMO_KEYS)
	@$(PYTHON) -m posgateway.backoffice.demo announce-ready $(HOST) $(PORT) $$$$ & \
	$(SERVE)

ifeq ($(SERVER),uvicorn)
SERVE = SECRET_KEY="$${SECRET_KEY:-$$(cat $(DEMO_SECRET_KEY))}" DEBUG=$${DEBUG:-1} exec $(VENV)/bin/uvicorn posgateway.asgi:application \
	--host $(HOST) --port $(PORT) --backlog 1024 --ws-max-size 1048576 \
	--ws-per-message-deflate false --timeout-graceful-shutdown 10
else
SERVE = SECRET_KEY="$${SECRET_KEY:-$$(cat $(DEMO_SECRET_KEY))}" DEBUG=$${DEBUG:-1} exec $(VENV)/bin/daphne --websocket_timeout -1 \
	--websocket_connect_timeout 30 -e tcp:port=$(PORT):interface=$(HOST):backlog=1024 \
	posgateway.asgi:application
endif

$(DEMO_SECRET_KEY):
	@umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

run-port-free:
	@$(PYTHON) -m posgateway.backoffice.demo check-port $(HOST) $(PORT)

# Start the demo over: new keys for its devices and a new API token (the old ones stop working).
demo-reset: install-run
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_setup --keys-file $(DEMO_KEYS) --reset

# The suite runs on every core (pytest-xdist), at most 4 workers: each worker starts servers and
# deployments of its own (tests/e2e/harness.py), so more workers than cores only adds start-ups.
# `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; \
	[ $$n -lt 2 ] && n=0; echo $$n)
# loadfile: a module's tests stay on one worker, so its module-scoped servers start once; the
# modules with real servers are handed out first (tests/conftest.py) and the quick ones fill in.
XDIST := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: install node-deps browser
	$(VENV)/bin/pytest $(XDIST) $(PYTEST_ARGS)

# The tests whose behaviour depends on the ASGI server (marked server_dependent: WebSocket framing,
# limits and close codes, restarts and kills, the sweeper's start, the server's own log) again, on
# uvicorn instead of daphne (CI runs it on PostgreSQL + Redis). The rest runs the same Django and
# Channels code whichever server is in front. TLS (test_adyen_node.py) is daphne's only:
# docs/operations.md has uvicorn behind nginx.
test-uvicorn: install node-deps browser
	E2E_SERVER=uvicorn $(VENV)/bin/pytest -m server_dependent $(XDIST) $(PYTEST_ARGS)

# Retake the README's dashboard screenshots (docs/screenshots/) from the browser tests.
screenshots: install browser
	UPDATE_SCREENSHOTS=1 $(VENV)/bin/pytest -m browser $(PYTEST_ARGS)

# ruff; the layers (import-linter contracts in pyproject.toml, docs/architecture.md); types of the
# domain apps and the gateway (mypy with django-stubs); models and migrations agree.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) tests/node/node_modules db.sqlite3 db.sqlite3-* test-artifacts

# The benchmark (issue 7): gateway and reference relay side by side; see docs/performance.md.
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

bench-smoke: install
	$(PY) bench/run.py --smoke
