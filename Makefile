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
# The external validation cohort: the phantom's second site (other scanners), other patients.
EXTERNAL_SUBJECTS ?= 60
EXTERNAL_SEED ?= 1
EXTERNAL_COHORT ?= data/01_raw/external_cohort

.PHONY: run test install browser phantom benchmarks clean-data wheelhouse device-wheels mutation

# The demo's torch/torchvision are pinned in constraints-cpu.txt (pyproject.toml only gives ranges):
# timm needs a torchvision built for the same torch, so both come first, together, through pip
# (pip takes this machine's local builds; uv would download a CUDA build). The other ~200 packages
# (MLflow's among them) through uv, which resolves and byte-compiles in parallel: 128 s -> 32 s here.
# Both byte-compile at install: where PYTHONDONTWRITEBYTECODE is set (as here) nothing is compiled
# later, and every test process compiles torch's imports again (a CI run took 27 min that way here).
$(BIN)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt torch torchvision uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints-cpu.txt \
	  -e ".[dev,viz,explain,demo]"
	touch $@

install: $(BIN)/.installed

## make run: install, generate the phantom cohort if absent, run every pipeline (CPU, defaults).
## ParallelRunner: one process per core; every run fixes its thread count, so the numbers are a
## plain `kedro run`'s, only sooner. OMP_WAIT_POLICY=PASSIVE: a node on two torch threads (the
## segmentation model) beside the other worker's runs no longer spin-waits on a busy core
## (pipeline time 559.5 s -> 444.3 s, the same results; docs/benchmarks.md).
run: install phantom
	OMP_WAIT_POLICY=PASSIVE $(BIN)/kedro run --runner ParallelRunner

# The report and kedro-viz tests open pages in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Chromium (apt-get) for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  || { echo "could not install Chromium: run 'sudo apt-get install chromium' and retry"; exit 1; }; }

phantom: install
	$(BIN)/idh-pseudocolor phantom --subjects $(PHANTOM_SUBJECTS) --seed $(PHANTOM_SEED) --out $(COHORT) --if-absent
	$(BIN)/idh-pseudocolor phantom --site b --layout brats --subjects $(EXTERNAL_SUBJECTS) \
	  --seed $(EXTERNAL_SEED) --out $(EXTERNAL_COHORT) --if-absent

## make test: install and run the whole test suite
test: install browser
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/python -m pytest -n 2

## make mutation: mutants of the number-shaping modules, each against its own unit tests
## (tools/mutation.py; not part of make test). Results: .mutation/results.md, docs/benchmarks.md.
mutation: install
	$(BIN)/python tools/mutation.py

benchmarks: install
	$(BIN)/python benchmarks/data_engineering.py
	$(BIN)/python benchmarks/training_overhead.py
	$(BIN)/python benchmarks/input_cache.py
	$(BIN)/python benchmarks/initial_weights.py

## make wheelhouse: wheels for an offline box that has its own torch (docs/reproducing.md), e.g.
##   make wheelhouse WHEEL_PYTHON=3.12 WHEEL_PLATFORM=manylinux2014_x86_64 WHEEL_SKIP="numpy pandas"
WHEELHOUSE ?= dist/wheelhouse
WHEEL_PYTHON ?=
WHEEL_PLATFORM ?=
WHEEL_SKIP ?=
WHEEL_EXTRAS ?=
wheelhouse: install
	$(BIN)/python tools/wheelhouse.py --out $(WHEELHOUSE) \
	  $(if $(WHEEL_PYTHON),--python-version $(WHEEL_PYTHON)) $(if $(WHEEL_PLATFORM),--platform $(WHEEL_PLATFORM)) \
	  $(if $(strip $(WHEEL_SKIP)),--skip $(WHEEL_SKIP)) $(if $(strip $(WHEEL_EXTRAS)),--extras $(WHEEL_EXTRAS))

## make device-wheels: what the device machines lack for benchmarks/gpu_check.py and gpu_study.py
## (their own torch and packages: tools/device_packages.txt), within one call's 64 MiB carry;
## installed there by benchmarks/device.sh (docs/benchmarks.md, "The device machines")
device-wheels: install
	$(BIN)/python tools/wheelhouse.py --device --out dist/device-wheels

## make clean-data: every output and cohort under data/, not the MLflow store (data/10_tracking:
## the history of past runs, which no run reads as input)
clean-data:
	find data -mindepth 2 -type f ! -name .gitkeep ! -path 'data/10_tracking/*' -delete
	find data -mindepth 2 -type d -empty ! -path 'data/10_tracking/*' -delete
