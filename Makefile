# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.faceattr-installed

.PHONY: demo test test-slow setup clean

setup: $(STAMP)

# torch/torchvision are pinned first so pip takes the builds on this machine's disk.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/faceattr demo

# The browser tests use the system Chromium (never a downloaded one) and skip without it: say so up front.
test: $(STAMP)
	@test -x /usr/bin/chromium || echo "note: no Chromium at /usr/bin/chromium: the web page's browser tests will be skipped (apt-get install -y chromium)"
	$(BIN)/pytest

# Slow tests (a local Ray cluster): installs the ray extra first.
test-slow: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,ray]'
	$(BIN)/pytest -m slow

clean:
	rm -rf $(VENV) .pytest_cache
