# Two entry points that do all set-up on a fresh machine:
#   make search   -- a real architecture search on the embedded digits data set (offline)
#   make test     -- the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rknas-installed

.PHONY: search test lint venv plugins clean

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,plot,export]' $(addprefix -e ./,$(wildcard plugins/*/))
	touch $(STAMP)

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
