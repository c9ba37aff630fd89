# Every target sets up .venv on its own; a fresh machine needs only python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= examples/demo.toml
DURATION ?=

.PHONY: run test lint bench chaos hotcode clean

$(STAMP): pyproject.toml setup.cfg examples/plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,mcp]'
	$(BIN)/python -m pip install --quiet -e examples/plugin
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/toolvisor run $(CONFIG) $(if $(DURATION),--duration $(DURATION))

test: $(STAMP)
	bash scripts/ensure-browser.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -c "import pykka, matplotlib" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# SIGKILL random tools under load and report recovery (DURATION seconds, default 60)
chaos: $(STAMP)
	$(BIN)/python -m benchmarks --only chaos $(if $(DURATION),--duration $(DURATION))

# record which functions actor processes run (actors/hotcode.txt, see actors/hotcode.py)
hotcode: $(STAMP)
	$(BIN)/python -m benchmarks.hotcode

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache bench-results.json
