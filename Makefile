# Framesmith: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BVENV := .venv-blender
PY := $(VENV)/bin/python
BPY := $(BVENV)/bin/python
B5VENV := .venv-blender5
BPY5 := $(B5VENV)/bin/python
TORCH_VERSION := 2.13.0
# bpy 5.1+ needs Python 3.13: from PATH, else from pyenv's versions folder.
PYTHON313 ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)

.PHONY: all setup blender5 test lint format demo clean tiny-models

all: test

setup: $(VENV)/.installed $(BVENV)/.installed blender5

# torch first and pinned: an unpinned torch (or a dependency's range) pulls GBs of CUDA wheels.
$(VENV)/.installed: requirements/backend.txt requirements/ray.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/backend.txt -r requirements/ray.txt -r requirements/dev.txt
	touch $@

$(BVENV)/.installed: requirements/blender.txt
	$(PYTHON) -m venv $(BVENV)
	$(BPY) -m pip install --quiet --disable-pip-version-check -r requirements/blender.txt
	touch $@

# The Blender 5.3 environment; on a machine without Python 3.13, one sentence and nothing else.
blender5:
	@if [ -f $(B5VENV)/.installed ] && [ $(B5VENV)/.installed -nt requirements/blender5.txt ]; then :; \
	elif [ -z "$(PYTHON313)" ]; then \
		echo "No Python 3.13 found (PATH or ~/.pyenv/versions/3.13*): the Blender suite runs on bpy 4.5 only; install Python 3.13 or pass PYTHON313=/path/to/python3.13 to test on Blender 5.3 too."; \
	else \
		$(PYTHON313) -m venv $(B5VENV) && \
		$(BPY5) -m pip install --quiet --disable-pip-version-check -r requirements/blender5.txt && \
		touch $(B5VENV)/.installed; \
	fi

# The import contract (.importlinter) sees the repository root as the package `framesmith`.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@mkdir -p build/lint && ln -sfn ../.. build/lint/framesmith
	PYTHONPATH=build/lint $(VENV)/bin/lint-imports --no-cache

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m pytest tests --ignore=tests/blender
	$(BPY) -m pytest tests/blender
	@if [ -f $(B5VENV)/.installed ]; then echo "== Blender suite on bpy 5.3 =="; $(BPY5) -m pytest tests/blender; fi

tiny-models: $(VENV)/.installed
	$(PY) -m backend make-tiny-models build/tiny-models

demo: setup
	$(PY) demo/run_demo.py --out demo-output

clean:
	rm -rf build demo-output .pytest_cache .ruff_cache
