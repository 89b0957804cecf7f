# The README's commands. Everything runs from a fresh clone: the first target
# creates .venv, installs pyomni editable with its dev tools, and compiles core/.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup build test serve demo bench lint clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# recompile whatever changed in core/ (pip install -e compiled it once)
build: setup
	$(BIN)/python setup.py --quiet build_ext --inplace

lint: build
	$(BIN)/ruff check pyomni grpc_server tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest tests --doctest-modules pyomni grpc_server

# the main job: the gRPC server on 127.0.0.1:50051, state in ./data (a demo network of real cities at first start)
serve: build
	$(BIN)/pyomni serve

demo: build
	$(BIN)/pyomni demo

bench: build
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-group-by=group \
		--benchmark-columns=min,median,max,ops,rounds

clean:
	rm -rf build $(VENV) pyomni/_core/*.so pyomni/_core/*.pxd *.egg-info
