# `make test` does all of its own set-up on a fresh machine: virtual environment, pinned
# dependencies, a Valkey-protocol server binary, then lint and the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint install system-deps clean

test: install system-deps lint
	CI=$${CI:-} $(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests bench chaos
	$(BIN)/ruff format --check src tests bench chaos

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

system-deps:
	scripts/ensure-system-deps.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
