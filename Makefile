# The two fresh-machine commands of the README, and the set-up they share.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PEOPLE ?= 20000
SEED ?= 7
MONTH ?= 2026-10

.PHONY: setup demo test dev

$(BIN)/earlyhelp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/earlyhelp

# A synthetic county of $(PEOPLE) residents, loaded into data/out/warehouse.duckdb.
demo: setup
	$(BIN)/earlyhelp generate --people $(PEOPLE) --seed $(SEED) --month $(MONTH) --out data/landing
	$(BIN)/earlyhelp run --landing data/landing --month $(MONTH) --out data/out

test: setup
	$(BIN)/python -m pytest -n 2

# The Dagster UI over the demo's folders, on the run history `make demo` recorded (data/out/.dagster).
dev: setup
	$(BIN)/earlyhelp dev --landing data/landing --out data/out
