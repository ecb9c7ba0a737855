# Framesmith: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BVENV := .venv-blender
PY := $(VENV)/bin/python
BPY := $(BVENV)/bin/python
TORCH_VERSION := 2.13.0

.PHONY: all setup test lint format demo clean tiny-models

all: test

setup: $(VENV)/.installed $(BVENV)/.installed

# torch first and pinned: an unpinned torch (or a dependency's range) pulls GBs of CUDA wheels.
$(VENV)/.installed: requirements/backend.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/backend.txt -r requirements/dev.txt
	touch $@

$(BVENV)/.installed: requirements/blender.txt
	$(PYTHON) -m venv $(BVENV)
	$(BPY) -m pip install --quiet --disable-pip-version-check -r requirements/blender.txt
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m pytest tests --ignore=tests/blender
	@if [ -n "$$(ls tests/blender/test_*.py 2>/dev/null)" ]; then $(BPY) -m pytest tests/blender; fi

tiny-models: $(VENV)/.installed
	$(PY) -m backend make-tiny-models build/tiny-models

demo: setup
	$(PY) demo/run_demo.py --out demo-output

clean:
	rm -rf build demo-output .pytest_cache .ruff_cache
