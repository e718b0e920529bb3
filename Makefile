# `make test` does all of its own set-up on a fresh machine: virtual environment, pinned
# dependencies, a Valkey-protocol server binary and the image builder, then lint, the whole test
# suite and the image test (`make image-test`: the Dockerfile built with podman and the image run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint install system-deps image-test clean

test: install system-deps lint
	CI=$${CI:-} $(BIN)/pytest
	@if command -v podman >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory image-test; \
	elif [ -n "$${CI:-}" ]; then \
	  echo "image test: podman and debootstrap are missing, and CI must build the image" >&2; exit 1; \
	else \
	  echo "image test NOT RUN: podman and debootstrap are missing (scripts/ensure-system-deps.sh installs them as root)"; \
	fi

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

# The Dockerfile built as it is with podman, on a bookworm base made from Debian's packages
# (scripts/image-base.sh, cached), and the image run: tests/deploy/image. Needs root (podman's
# store, chroot); README.md, "What the image test proves".
image-test: install system-deps
	INGESTION_IMAGE_TEST=1 CI=$${CI:-} $(BIN)/pytest tests/deploy/image -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
