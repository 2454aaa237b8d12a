# Everything a fresh clone needs: `make run` and `make test` set up .venv themselves and are safe to repeat.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
POLIS_PORT ?= 8000

.PHONY: run test lint bench clean setup system-packages

setup: $(STAMP) system-packages

# Debian packages the tests and the demo need, installed only when missing, in one apt run: Mosquitto (the real
# MQTT broker of the streaming tests and the live demo) and Chromium (the dashboard's browser tests drive
# Debian's chromium through Playwright's Python package with executable_path; no browser is ever downloaded).
system-packages:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || missing="$$missing mosquitto"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/polis demo --port $(POLIS_PORT)

test: setup lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) polis-data .pytest_cache .mypy_cache .ruff_cache
