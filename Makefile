# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates the virtual environment it needs in .venv (plain pip: torch comes from PyPI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: demo test test-slow lint format bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/rnnt demo --out $(DEMO_DIR)

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

test-slow: $(VENV)/.installed
	$(BIN)/pytest -q -m slow

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/loss.py --json
	$(BIN)/python benchmarks/data.py --json
	$(BIN)/python benchmarks/decode.py --json
	$(BIN)/python benchmarks/train_step.py --json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
