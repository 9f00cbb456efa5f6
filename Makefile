# mixlab: make venv | make test | make quickstart [WORKDIR=...] | make lint
# python3 is used only to create .venv; everything else runs from .venv.

PYTHON ?= python3
VENV := .venv
WORKDIR ?= /tmp/mixlab_quickstart

.PHONY: venv test quickstart lint

venv: $(VENV)/.installed

# Re-run only when the pinned stack changes (pyproject.toml pins as requirements.txt does).
$(VENV)/.installed: pyproject.toml requirements.txt requirements-nodeps.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $@

# Two pytest-xdist workers, one per file (a file's module fixtures are built once): most tests are
# single-threaded XLA compiles, so two run side by side on 2 cores (PYTEST_ARGS= for one process).
PYTEST_ARGS ?= -n 2 --dist loadfile

test: venv
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS) tests

quickstart: venv
	$(VENV)/bin/python -m experiments.quickstart --workdir=$(WORKDIR)

lint: venv
	$(VENV)/bin/lint-imports
