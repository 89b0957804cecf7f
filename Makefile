# The README's commands. Everything runs from a fresh clone: `make serve` creates .venv and installs
# pyomni editable with what serving needs (pip compiles core/ once); `make test` adds the development
# tools (tests, linters, benchmarks, Ray) on top, without building pyomni again.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP   := $(VENV)/.installed

.PHONY: setup build test serve demo bench lint clean postgres redis

$(RUNTIME): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -qq -e .          # -qq: not the build backend's notices either
	touch $(RUNTIME)

# the dev extra of pyproject.toml (its own "pyomni[ray]" unfolded), installed beside the package and held to
# the package's own requirements (as constraints), so that nothing it needs is moved
$(STAMP): $(RUNTIME)
	$(BIN)/python -c "import importlib, sys; t = importlib.import_module('tomllib' if sys.version_info >= (3, 11) else 'pip._vendor.tomli'); p = t.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; open('$(VENV)/dev-requirements.txt', 'w').write('\n'.join(r for r in x['dev'] + x['ray'] if not r.startswith('pyomni')) + '\n'); open('$(VENV)/constraints.txt', 'w').write('\n'.join(p['dependencies']) + '\n')"
	$(BIN)/python -m pip install --quiet -r $(VENV)/dev-requirements.txt -c $(VENV)/constraints.txt
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

# the main job: the gRPC server on 127.0.0.1:50051, state in ./data (a demo network of real cities at first start).
# It runs what pip compiled; after changing core/, `make build` (which needs the dev tools) recompiles.
serve: $(RUNTIME)
	$(BIN)/pyomni serve

demo: $(RUNTIME)
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
