# ar-gen: `make demo` (CPU demo on the bundled MNIST) and `make test`; both create or update .venv first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-all clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ar-gen demo --out runs/demo --overwrite

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -n 2 --dist worksteal -q --durations=25 $(PYTEST_ARGS)

test-all: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -n 2 --dist worksteal -q -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
