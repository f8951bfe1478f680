# `make test` and `make demo` set up everything they need on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first, with TORCH_INDEX as an extra index: PyTorch's CPU wheels, or its CUDA 12.8 ones
# where nvidia-smi runs (a plain package index alone gives the big CUDA build everywhere). The
# pinned version matches the index's local build (2.13.0+cpu), which pip prefers. Override it
# (`make test TORCH_INDEX=https://download.pytorch.org/whl/cu126`), or set it empty to use only
# pip's configured index. The project's torch range admits the pin, so nothing bigger follows.
TORCH_PIN := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/$(if $(shell command -v nvidia-smi 2>/dev/null),cu128,cpu)

.PHONY: test demo lint setup redis-server clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server is missing: installing Debian's redis-server package"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  fi; \
	  command -v redis-server >/dev/null 2>&1 || { \
	    echo "error: the tests need a redis-server binary; install it (Debian: apt-get install redis-server) and run make test again" >&2; \
	    exit 1; }; }

lint: setup
	$(VENV)/bin/ruff check .

test: setup redis-server lint
	@$(PY) -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	  exit $$rc

demo: setup redis-server
	$(PY) -m trainer.demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache reports .demo
