# `make test` and `make demo` set up everything they need on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch; the project's range admits it, so pip installs nothing bigger after it.
TORCH_PIN := torch==2.13.0

.PHONY: test demo lint setup redis-server clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
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
