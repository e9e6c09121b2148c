# The two set-up commands (see README): `make run` and `make test`.
#
# `make run` installs only what running needs (`pip install -e .`: the gateway, the admin,
# the built-in fake provider); `make test` adds the test extra (pytest, playwright, ruff,
# the vendors' SDKs, …). Each install is done once, remembered by a stamp file in the venv
# and redone when pyproject.toml changes; a venv installed for tests also serves `make run`.
# --no-compile: Python compiles only the modules the demo imports, on first use (~15% of the
# install's time on this 2-core machine, under load).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PIP_INSTALL = $(VENV)/bin/pip install --quiet --disable-pip-version-check
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean install install-run

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(PY)
	@if [ -f $(TEST_STAMP) ] && [ $(TEST_STAMP) -nt pyproject.toml ]; then \
	  echo "$(VENV) already holds the test install (a superset of what running needs)"; \
	else \
	  echo "installing the runtime dependencies into $(VENV) (once; about a minute)"; \
	  $(PIP_INSTALL) --no-compile -e .; \
	fi
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) -e ".[test]"
	touch $@ $(RUN_STAMP)

install-run: $(RUN_STAMP)

install: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(PY) scripts/run_demo.py

test: $(TEST_STAMP)
	bash scripts/test.sh

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(TEST_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(TEST_STAMP)
	$(PY) bench/bench.py --start-gateway

clean:
	rm -rf $(VENV) var
