# acrn-sim: `make demo` runs a guest, `make test` runs the tests. Both create .venv if missing,
# and build the fast engine into it when cmake and a C compiler are there (`make engine`;
# third_party/unicorn/README.md): otherwise a one-line notice, and PyPI's unicorn is used.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/acrn-sim: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,sweep]'
	touch $@

# Does nothing when the library is already built from the same sdist, patch and flags.
engine: $(BIN)/acrn-sim
	bash third_party/unicorn/build.sh $(VENV)

demo: $(BIN)/acrn-sim engine
	$(BIN)/acrn-sim run guests/images/hello.elf --explain

test: $(BIN)/acrn-sim engine
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

.PHONY: demo test lint guests engine fuzz
