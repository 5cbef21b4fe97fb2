# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates the virtual environment it needs in .venv (plain pip: torch comes from PyPI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: demo test test-slow lint format bench clean voices

# Optional speech engines and human recordings for the demo corpus, installed by `make voices`
# (apt: Debian or Ubuntu, as root or through sudo). Debian main only: free licences that let us
# train on them and share what we make. `make demo` never needs them; the corpus uses those present.
#   flite, festival + festvox-*: two more synthesizers and their voices (Kal, KED, SLT, AWB, RMS);
#   asterisk-core-sounds-en(-wav), warzone2100-data, ktuberling-data, klettres-data: human speech
#   (rnnt/corpus/recordings; -en carries the labels of the -wav prompts).
VOICE_PACKAGES := flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	asterisk-core-sounds-en asterisk-core-sounds-en-wav warzone2100-data ktuberling-data \
	klettres-data
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
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

voices:
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends $(VOICE_PACKAGES)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
