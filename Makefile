# Everyday commands. `make demo` and `make test` set everything up on a fresh machine (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format bench bench-baselines openapi build-addon clean

setup: $(STAMP)

# torch first, pinned to the CPU build that lies on disk here (never a multi-GB CUDA download)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup  ## the main job: start the backend with the shipped models, fill real sample clips over HTTP
	$(VENV)/bin/anyfill demo --out demo-output

test: setup  ## the whole test suite (what CI runs)
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not blender"

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .

bench-baselines: setup  ## zero and interp on both test splits, JSON in bench-results/
	for s in body hand; do for m in zero interp; do \
	  $(VENV)/bin/anyfill bench inbetween --skeleton $$s --method $$m --json bench-results/$$s-$$m.json || exit 1; \
	done; done

openapi: setup  ## write the server's API contract to docs/openapi.json (checked by the tests)
	$(PY) -m anyfill.backend.openapi docs/openapi.json

build-addon: setup  ## the Blender extension zip in dist/, checked by Blender's own validator
	$(VENV)/bin/anyfill build-addon

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache bench-results demo-output
