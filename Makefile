# Two entry points that do all set-up on a fresh machine:
#   make search   -- a real architecture search on the embedded digits data set (offline)
#   make test     -- the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rknas-installed

.PHONY: search test lint venv plugins clean postgres-server

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) | postgres-server
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,plot,export,postgres]' $(addprefix -e ./,$(wildcard plugins/*/))
	touch $(STAMP)

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

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) studies/*.db
