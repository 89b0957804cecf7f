# The README's commands. Everything runs from a fresh clone: the first target
# creates .venv, installs pyomni editable with its dev tools, and compiles core/.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup build test serve demo bench lint clean postgres redis

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

# PostgreSQL for the durability benchmarks' baseline (benchmarks/pg_baseline.py), from Debian's packages;
# does nothing when a server is already installed under /usr/lib/postgresql/*/bin. Independent of .venv.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "PostgreSQL already installed: $$(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"; \
	else \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
	fi

# Redis for the flash-sale claim benchmarks' baseline (benchmarks/redis_baseline.py), from Debian's packages;
# does nothing when redis-server is already on PATH (or in /usr/bin). Independent of .venv.
redis:
	@if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then \
		echo "Redis already installed: $$(command -v redis-server || echo /usr/bin/redis-server)"; \
	else \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	fi

clean:
	rm -rf build $(VENV) pyomni/_core/*.so pyomni/_core/*.pxd *.egg-info
