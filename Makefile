# Hikube Portal. `make run` starts everything embedded; `make test` runs the suite.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
DEVCLUSTER_PORT ?= 6443
# `make test`: pytest-xdist workers, and a pytest -m expression choosing the tests (all if empty).
TEST_WORKERS ?= 4
TEST_SELECT ?=
export DEBUG ?= true
export PYTHONUNBUFFERED := 1

.PHONY: help setup prerequisites run test lint format messages messages-check bench clean

help:
	@echo "make run     start the portal, devcluster, a Celery worker and beat (embedded mode)"
	@echo "make test    run the test suite (TEST_WORKERS=4 in parallel; TEST_SELECT='backends' picks by mark)"
	@echo "make lint    ruff check, format check and the import contracts (import-linter)"
	@echo "make bench   run the benchmarks in bench/"

$(VENV)/.installed: requirements.txt
	@[ -x $(PY) ] || { echo "Creating the Python environment in $(VENV)..."; python3 -m venv $(VENV); }
	echo "Installing the Python packages of requirements.txt into $(VENV) (the first time takes a minute or two)..."
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	echo "Python packages installed."
	touch $@

setup: $(VENV)/.installed
	@if command -v msgfmt >/dev/null; then $(PY) manage.py compilemessages -v0 --ignore '.venv/*'; \
	else echo "note: gettext is missing (apt-get install gettext); using the committed .mo files"; fi

# Embedded mode: SQLite under VAR_DIR (default var/), the filesystem broker, devcluster with its
# state kept in VAR_DIR. The metric and agent URLs follow the ports, so a second `make run` on other
# ports never scrapes (or hands out) the first one's.
run: setup
	@export VAR_DIR="$${VAR_DIR:-$(CURDIR)/var}"
	export METRICS_SD_URL="$${METRICS_SD_URL:-http://127.0.0.1:$(DEVCLUSTER_PORT)/dcgm/targets?include=vms}"
	export METRICS_AGENT_URL="$${METRICS_AGENT_URL:-http://127.0.0.1:$(PORT)/metrics/agent/}"
	mkdir -p "$$VAR_DIR/devcluster" "$$VAR_DIR/log"
	log="$$VAR_DIR/log"
	echo "Starting devcluster on port $(DEVCLUSTER_PORT) (log: $$log/devcluster.log)..."
	pids=()
	trap 'kill $${pids[@]} 2>/dev/null; wait' EXIT INT TERM
	$(PY) -m devcluster serve --port $(DEVCLUSTER_PORT) --fleet demo \
	  --kubeconfig-out "$$VAR_DIR/devcluster/kubeconfig" --state "$$VAR_DIR/devcluster/state.json" \
	  > "$$log/devcluster.log" 2>&1 & pids+=($$!)
	for _ in $$(seq 150); do grep -q "listening on" "$$log/devcluster.log" 2>/dev/null && break; sleep 0.2; done
	echo "Preparing the database (migrations, demo users, cluster record)..."
	$(PY) manage.py migrate -v0
	$(PY) manage.py seed_demo
	$(PY) manage.py register_cluster
	echo "First inventory sync..."
	$(PY) manage.py sync_inventory
	echo "Starting the Celery worker and beat (logs: $$log/worker.log, $$log/beat.log)..."
	$(VENV)/bin/celery -A hikube_portal worker --pool=solo --loglevel=INFO > "$$log/worker.log" 2>&1 & pids+=($$!)
	$(VENV)/bin/celery -A hikube_portal beat --loglevel=INFO > "$$log/beat.log" 2>&1 & pids+=($$!)
	echo
	echo "  Hikube Portal: http://127.0.0.1:$(PORT)/"
	echo "  Logins (password hikube-demo): alice (tenant-acme), bob (tenant-globex), admin (platform admin)"
	echo "  devcluster: http://127.0.0.1:$(DEVCLUSTER_PORT)/  kubectl --kubeconfig $$VAR_DIR/devcluster/kubeconfig get nodes"
	echo "  Logs: $$log/. Stop with Ctrl-C."
	echo
	# Static files as production serves them: hashed, gzip/brotli, cached for a year.
	STATIC_COLLECTED=true $(PY) manage.py collectstatic --noinput -v0
	STATIC_COLLECTED=true $(PY) manage.py runserver 127.0.0.1:$(PORT) --noreload

# The Debian packages the tests need: installed when root, else named (before anything runs).
prerequisites:
	@bin/prerequisites

test: prerequisites setup
	$(PY) -m pytest -n $(TEST_WORKERS) --maxschedchunk=1 $(if $(TEST_SELECT),-m "$(TEST_SELECT)")

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

messages: setup
	$(PY) manage.py makemessages -l fr -l de --no-location --no-obsolete -i '.venv/*' -i 'devcluster/*' -i 'bench/*' -i 'staticfiles/*'
	$(PY) manage.py compilemessages -v0 --ignore '.venv/*'

# Fails when the catalogs, refreshed by makemessages, hold an untranslated or fuzzy entry.
messages-check: setup
	@tmp=$$(mktemp -d)
	cp -r locale "$$tmp/locale.orig"
	$(PY) manage.py makemessages -l fr -l de --no-location --no-obsolete -i '.venv/*' -i 'devcluster/*' -i 'bench/*' -i 'staticfiles/*' -v0
	status=0
	for po in locale/*/LC_MESSAGES/django.po; do
	  left=$$(msgattrib --untranslated --no-obsolete "$$po"; msgattrib --only-fuzzy --no-obsolete "$$po")
	  if grep -q msgid <<<"$$left"; then echo "$$po has untranslated or fuzzy entries:"; echo "$$left"; status=1; fi
	done
	rm -rf locale && mv "$$tmp/locale.orig" locale && rm -rf "$$tmp"
	exit $$status

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf var staticfiles
