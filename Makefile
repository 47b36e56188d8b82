# The two commands a new user needs (see README):  make run   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Kedro telemetry is off for this project (.telemetry says so too): nothing may prompt or phone home.
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

PHANTOM_SUBJECTS ?= 200
PHANTOM_SEED ?= 0
COHORT ?= data/01_raw/cohort

.PHONY: run test install browser phantom benchmarks clean-data

# torch/torchvision are pinned (also in pyproject.toml): timm needs a torchvision built for the same torch.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

## make run: install, generate the phantom cohort if absent, run every pipeline (CPU, defaults)
run: install phantom
	$(BIN)/kedro run

# The report and kedro-viz tests open pages in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Chromium (apt-get) for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  || { echo "could not install Chromium: run 'sudo apt-get install chromium' and retry"; exit 1; }; }

phantom: install
	$(BIN)/idh-pseudocolor phantom --subjects $(PHANTOM_SUBJECTS) --seed $(PHANTOM_SEED) --out $(COHORT) --if-absent

## make test: install and run the whole test suite
test: install browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

benchmarks: install
	$(BIN)/python benchmarks/data_engineering.py
	$(BIN)/python benchmarks/training_overhead.py

clean-data:
	find data -mindepth 2 -type f ! -name .gitkeep -delete
	find data -mindepth 2 -type d -empty -delete
