# acrn-sim: `make demo` runs a guest, `make test` runs the tests. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/acrn-sim: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/acrn-sim
	$(BIN)/acrn-sim run guests/images/hello.elf --explain

test: $(BIN)/acrn-sim
	$(BIN)/python -m pytest -q

lint: $(BIN)/acrn-sim
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

guests:
	$(MAKE) -C guests

# A seeded fuzz campaign through the real CLI; prints a table, keeps one reproducer per finding
N ?= 10000
SEED ?= 1
JOBS ?= 2
fuzz: $(BIN)/acrn-sim
	$(BIN)/python -m tests.fuzz.runner --n $(N) --seed $(SEED) --jobs $(JOBS) --out out/fuzz

.PHONY: demo test lint guests fuzz
