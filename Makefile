# Everyday commands. `make demo` and `make test` set everything up on a fresh machine (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Blender 4.4, the oldest Blender the extension supports, in its own venv: its bpy wheel is built on numpy 1.x
VENV44 ?= .venv-blender4.4
STAMP44 := $(VENV44)/.installed

.PHONY: setup demo test test-fast test-blender-4.4 lint format bench bench-baselines models openapi build-addon clean

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

test-blender-4.4: $(STAMP44)  ## the extension's Blender tests on Blender 4.4 (bpy 4.4.0), the oldest supported
	$(VENV44)/bin/python -m pytest -m blender

$(STAMP44): pyproject.toml
	$(PYTHON) -m venv $(VENV44)
	$(VENV44)/bin/python -m pip install --quiet --upgrade pip
	$(VENV44)/bin/python -m pip install --quiet torch==2.13.0 'numpy<2'
	$(VENV44)/bin/python -m pip install --quiet 'numpy<2' bpy==4.4.0 -e '.[backend]' pytest httpx hypothesis
	touch $@

test-fast: setup
	$(PY) -m pytest -m "not slow and not blender"

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .

bench-baselines: setup  ## zero, interp and bezier (Blender's own curves) on both test splits, JSON in bench-results/
	for s in body hand; do for m in zero interp bezier; do \
	  $(VENV)/bin/anyfill bench inbetween --skeleton $$s --method $$m --json bench-results/$$s-$$m.json || exit 1; \
	done; done

models: setup  ## retrain the shipped hand and body models with the exact commands in their cards (about 2 h), bench them
	for s in hand body; do \
	  $(PY) -c "import json, sys; t = json.load(open(sys.argv[1]))['training']; print('\n'.join(t.get('commands') or [t['command']]))" \
	    backend/models/$$s.json > .models-$$s.txt || exit 1; \
	  out=$$($(PY) -c "import json, sys; print(json.load(open(sys.argv[1]))['training'].get('output', ''))" backend/models/$$s.json); \
	  while read -r cmd; do \
	    case "$$cmd" in anyfill*) fresh=--fresh;; *) fresh=;; esac; \
	    OMP_NUM_THREADS=1 $(VENV)/bin/$$cmd $$fresh < /dev/null || exit 1; \
	    r=$$(echo "$$cmd" | sed -n 's/.*--run-dir \([^ ]*\).*/\1/p'); [ -z "$$r" ] || run=$$r; \
	  done < .models-$$s.txt; \
	  [ -n "$$out" ] || out=$$run/export/$$s-query.safetensors; \
	  cp $$out backend/models/$$s.safetensors; cp $${out%.safetensors}.json backend/models/$$s.json; \
	  $(PY) -c "import sys; from training.inbetween.checkpoint import read_card, write_card; \
	    p, cmds, out = sys.argv[1:]; c = read_card(p); \
	    lines = open(cmds).read().split(chr(10)); lines = [x for x in lines if x]; \
	    c['training'].update(commands=lines, output=out) if len(lines) > 1 else None; \
	    write_card(p, c)" backend/models/$$s.json .models-$$s.txt $$out || exit 1; \
	  rm -f .models-$$s.txt; \
	  OMP_NUM_THREADS=1 $(VENV)/bin/anyfill bench calibrate-sampling --model $$s --write || exit 1; \
	  $(VENV)/bin/anyfill bench inbetween --skeleton $$s --method $$s --baseline interp --record || exit 1; \
	done

openapi: setup  ## write the server's API contract to docs/openapi.json (checked by the tests)
	$(PY) -m backend.openapi docs/openapi.json

build-addon: setup  ## the Blender extension zip in dist/, checked by Blender's own validator
	$(VENV)/bin/anyfill build-addon

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache bench-results demo-output
