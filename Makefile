# The README's two commands: `make run` and `make test`. Everything a fresh
# machine needs is installed from here, never by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# compat mode keeps twisted/plugins visible to twistd (a PEP 660 editable install hides it)
PIP_INSTALL := $(BIN)/pip install -q --disable-pip-version-check --config-settings editable_mode=compat

.PHONY: run test install install-test postgres-binaries chromium synapse-peer sytest sytest-update fuzz jssdk-check appservice-check synadm-check lint typecheck sample-config clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(PIP_INSTALL) -e .
	$(MAKE) --no-print-directory plugin-cache
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed setup.cfg pyproject.toml
	$(PIP_INSTALL) -e '.[test,postgres]'
	touch $@

# twistd finds plugins through dropin.cache: rebuild it after every install.
.PHONY: plugin-cache
plugin-cache:
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/twistd -n --pidfile= mxserver

# The test suite runs every storage test on Postgres too; install the server
# binaries from Debian when they are missing (as root, or through sudo).
postgres-binaries:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "postgres binaries present"; \
	else \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
		echo "installing postgresql from apt"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

# tests/test_admin_console drives the web admin console in a headless Chromium through
# selenium: install Debian's browser and its driver when they are missing (as root, or sudo).
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "chromium and chromedriver present"; \
	else \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
		echo "installing chromium and chromium-driver from apt"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# tests/interop federate with a real Synapse from PyPI, installed by the shared adapter into
# ~/.cache/mx-bench (cheap once done). Its psycopg2 builds from source and needs pg_config
# (Debian's libpq-dev). Only a missing ../shared is tolerated here (the tests then skip).
SHARED ?= ../shared
synapse-peer:
	@if [ ! -f "$(SHARED)/servers/synapse/install" ]; then \
		echo "no $(SHARED)/servers/synapse/install: interop tests will skip"; \
	else \
		if ! command -v pg_config >/dev/null 2>&1; then \
			SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
			echo "installing libpq-dev from apt (pg_config, for Synapse's psycopg2)"; \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libpq-dev >/dev/null; \
		fi; \
		bash "$(SHARED)/servers/synapse/install" >/dev/null; \
	fi

# One trial worker per core: the suite is mostly waiting on sockets and databases, and
# each worker has its own _trial_temp (SQLite files, Postgres cluster).
TRIAL_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
test: install-test postgres-binaries chromium synapse-peer
	$(BIN)/trial -j$(TRIAL_JOBS) tests
	$(MAKE) --no-print-directory sytest

# SyTest, the field's black-box suite (../shared/sytest), against this checkout at room
# version 10. Every test on tests/sytest/passing.txt must pass (the list only grows:
# `make sytest-update` adds the newly passing ones, except those on tests/sytest/racy.txt,
# whose outcome is timing the server does not control); tests/sytest/exclusions.txt lists,
# with the spec text, what SyTest expects that mxserver rightly refuses. The TAP output and
# a per-file summary are in $(SYTEST_OUT). Its Perl dependencies come from Debian (root/sudo).
SYTEST_OUT ?= _sytest
SYTEST_CHECK := $(BIN)/python contrib/sytest_check.py $(SYTEST_OUT) tests/sytest/passing.txt --exclusions tests/sytest/exclusions.txt \
	--racy tests/sytest/racy.txt
sytest: install
	@if [ ! -f "$(SHARED)/sytest/run" ]; then \
		echo "no $(SHARED)/sytest: SyTest skipped"; \
	else \
		EXCLUDE="$(CURDIR)/tests/sytest/exclusions.txt" bash "$(SHARED)/sytest/run" $(SYTEST_OUT); \
		$(SYTEST_CHECK); \
	fi

sytest-update:
	$(SYTEST_CHECK) --update

# A bounded schema-driven fuzz run (schemathesis) over every Client-Server operation of the
# spec in ../shared/spec: no response may be a server error (see contrib/fuzz_client_api.py).
FUZZ_EXAMPLES ?= 20
$(VENV)/.installed-fuzz: $(VENV)/.installed setup.cfg pyproject.toml
	$(PIP_INSTALL) -e '.[fuzz]'
	touch $@

fuzz: $(VENV)/.installed-fuzz
	$(BIN)/python contrib/fuzz_client_api.py --spec $(SHARED)/spec/api/client-server --max-examples $(FUZZ_EXAMPLES)

# Scratch checks (not part of `make test`; need node >= 20 and npm): real matrix-js-sdk clients
# against a fresh server: their unread counts follow /sync's, and with threadSupport they show
# a thread and its replies, and their SlidingSync keeps a room list and a live timeline
# (see contrib/jssdk_unread/run).
jssdk-check: install
	MXSERVER_PYTHON=$(abspath $(BIN))/python bash contrib/jssdk_unread/run

# Scratch check (not part of `make test`; installs mautrix from PyPI into its own venv): a real
# appservice framework registers a puppet, joins, sends and receives (see contrib/mautrix_check/run).
appservice-check: install
	MXSERVER_PYTHON=$(abspath $(BIN))/python bash contrib/mautrix_check/run

# Scratch check (not part of `make test`; installs synadm from PyPI into its own venv): the
# Synapse admin CLI manages users, rooms, media, tokens and reports (contrib/synadm_check/run).
synadm-check: install
	MXSERVER_PYTHON=$(abspath $(BIN))/python bash contrib/synadm_check/run

lint:
	$(BIN)/ruff check mxserver mxserver_modules tests twisted

typecheck:
	$(BIN)/mypy

sample-config: install
	$(BIN)/python -m mxserver generate-config contrib/homeserver.sample.yaml

clean:
	rm -rf $(VENV) _trial_temp* _sytest build *.egg-info twisted/plugins/dropin.cache
