# Two entry points that do all set-up on a fresh machine:
#   make search   -- a real architecture search on the embedded digits data set (offline)
#   make test     -- the whole test suite (what CI runs)
# and the upkeep of what they install:
#   make test-latest  -- the suite in .venv-latest, with the newest releases pyproject.toml allows
#   make lock         -- test-latest, then requirements/lock.txt from .venv-latest (only if it passed)
PYTHON ?= python3
VENV ?= .venv
LATEST ?= .venv-latest
BIN := $(VENV)/bin
STAMP := $(VENV)/.rknas-installed
LOCK := requirements/lock.txt
EXTRAS := test,plot,export,postgres
PACKAGES := -e '.[$(EXTRAS)]' $(addprefix -e ./,$(wildcard plugins/*/))

.PHONY: search test test-fast test-latest lock lint venv plugins clean postgres-server

# The lock pins every package to the versions the suite passed with; on another Python or
# platform than the lock's, pip takes pyproject.toml's ranges instead (and says so).
$(STAMP): pyproject.toml $(LOCK) $(wildcard plugins/*/pyproject.toml) | postgres-server
	$(PYTHON) -m venv $(VENV)
	if $(PYTHON) requirements/lock.py usable $(LOCK); then pins="-c $(LOCK)"; else pins=""; fi; \
	$(BIN)/python -m pip install -q --upgrade pip $$pins && \
	$(BIN)/python -m pip install -q $$pins $(PACKAGES)
	$(BIN)/python requirements/lock.py diff $(LOCK)
	touch $(STAMP)

# A separate environment with the newest releases the ranges allow: an upstream release that
# breaks rknas shows here the day this runs, not in a user's fresh clone.
test-latest: | postgres-server
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager $(PACKAGES)
	@echo "newest releases within pyproject.toml's ranges, against $(LOCK):"
	$(LATEST)/bin/python requirements/lock.py diff $(LOCK)
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/mypy
	$(LATEST)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

lock: test-latest
	$(LATEST)/bin/python requirements/lock.py write $(LOCK)

# Debian's PostgreSQL server: the tests start a private one (initdb/pg_ctl in a temp folder).
# A quick check when it is there; apt-get (root, as in CI) when it is not.
postgres-server:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's postgresql (the test suite starts a private server)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
	  echo "PostgreSQL's server is missing and installing it needs root: sudo apt-get install -y postgresql" >&2; exit 1; \
	fi

venv: $(STAMP)

search: $(STAMP)
	$(BIN)/rknas search --space digits_quick --trials 20

# Four test processes (pytest-xdist), the slow tests first (tests/conftest.py), idle ones stealing
# work: on this 2-core machine 414 s against 768 s in one process; six processes took 545 s
# (benchmarks/RESULTS.md, "The suite's time").
TEST_WORKERS ?= 4
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The edit loop: no Ray, no PostgreSQL, no long training (tests marked slow, and every test that
# uses a shared service, are left out; CI runs everything).
test-fast: $(STAMP)
	RKNAS_TEST_FAST=1 $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(LATEST) studies/*.db
