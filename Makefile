# Everyday commands. `make demo` and `make test` set everything up on a fresh machine (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format bench bench-baselines models openapi build-addon clean

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

MODEL_ARGS = --variant query d_model=128 batch_size=32 steps_per_epoch=200 val_windows=256 trainer.threads=1
models: setup  ## retrain the shipped hand and body models (two time-bounded stages, see docs/anyorder.md)
	for s in hand body; do \
	  $(VENV)/bin/anyfill train anyorder --skeleton $$s $(MODEL_ARGS) trainer.max_epochs=1000 \
	    trainer.max_time=00:00:55:00 --run-dir runs/$$s-query || exit 1; \
	  $(VENV)/bin/anyfill train anyorder --skeleton $$s $(MODEL_ARGS) lr=0.0003 dropout=0.0 warmup_steps=50 \
	    init_from=runs/$$s-query/export/$$s-query.safetensors trainer.max_epochs=8 trainer.max_time=00:00:20:00 \
	    --run-dir runs/$$s-query3 || exit 1; \
	  cp runs/$$s-query3/export/$$s-query.safetensors backend/models/$$s.safetensors; \
	  cp runs/$$s-query3/export/$$s-query.json backend/models/$$s.json; \
	  $(VENV)/bin/anyfill bench inbetween --skeleton $$s --method $$s --baseline interp --record || exit 1; \
	done

openapi: setup  ## write the server's API contract to docs/openapi.json (checked by the tests)
	$(PY) -m anyfill.backend.openapi docs/openapi.json

build-addon: setup  ## the Blender extension zip in dist/, checked by Blender's own validator
	$(VENV)/bin/anyfill build-addon

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache bench-results demo-output
