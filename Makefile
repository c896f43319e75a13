# ttabench: `make demo` and `make test` set everything up on a fresh clone (venv in .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= outputs/demo

.DEFAULT_GOAL := help
.PHONY: help install demo test test-slow lint format pretrain pretrain-iabn pretrain-c8 clean bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "ttabench needs Python >= 3.11 (set PYTHON=python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install ttabench with its dependencies

demo: $(STAMP) ## source vs bn on the embedded benchmark (i.i.d. stream), then the error table
	$(VENV)/bin/ttabench run -m method=source,bn hydra.sweep.dir=$(DEMO_DIR)
	$(VENV)/bin/ttabench compare $(DEMO_DIR)

test: $(STAMP) ## the default (fast) test suite
	$(PY) -m pytest -q

test-slow: $(STAMP) ## only the slow tests (retraining, large streams)
	$(PY) -m pytest -q -m slow

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check ttabench tests scripts
	$(VENV)/bin/ruff format --check ttabench tests scripts

format: $(STAMP) ## apply ruff formatting and safe fixes
	$(VENV)/bin/ruff check --fix ttabench tests scripts
	$(VENV)/bin/ruff format ttabench tests scripts

bench: $(STAMP) ## benchmark of the harness into results/bench/<device>/bench.csv (QUICK=1: a minute or two)
	$(PY) scripts/bench.py $(if $(QUICK),--quick --out outputs/bench,)

pretrain: $(STAMP) ## retrain the shipped embedded model (writes ttabench/models/weights/)
	$(VENV)/bin/ttabench pretrain

clean: ## remove run outputs and caches (not the venv)
	rm -rf outputs build *.egg-info .pytest_cache .ruff_cache

.PHONY: reference reference-quick reference-methods reference-memory reference-fashion reference-protocols reference-sensitivity reference-outliers
reference: $(STAMP) ## regenerate results/ (reference grid: hours on 2 CPU cores; rerun to resume)
	$(PY) scripts/reference_results.py --launcher joblib --n-jobs 2

reference-methods: $(STAMP) ## the adapting methods' grid into results/methods/ (about an hour; rerun to resume)
	$(PY) scripts/reference_results.py --grid methods --launcher joblib --n-jobs 2 --n-per-domain 1000

reference-memory: $(STAMP) ## the memory/teacher methods' grid into results/memory/ (about 2 hours; rerun to resume)
	$(PY) scripts/reference_results.py --grid memory --launcher joblib --n-jobs 2 --n-per-domain 300

reference-fashion: $(STAMP) ## Fashion-MNIST-C: every method x iid/dirichlet/continual into results/fashion/ (needs dataset-fashion-mnist)
	$(PY) scripts/reference_results.py --grid fashion --launcher joblib --n-jobs 2

reference-protocols: $(STAMP) ## methods x protocols (online, episodic, oracle_selection, compute_aware) into results/protocols/ (rerun to resume)
	$(PY) scripts/reference_results.py --grid protocols --launcher joblib --n-jobs 2

reference-sensitivity: $(STAMP) ## TENT's learning-rate sweep, test and held-out corruptions, into results/sensitivity/
	$(PY) scripts/reference_results.py --grid sensitivity --launcher joblib --n-jobs 2

reference-outliers: $(STAMP) ## source, bn, tent, eata, sar, rotta, stamp with 20 % outliers and without, into results/outliers/ (rerun to resume)
	$(PY) scripts/reference_results.py --grid outliers --launcher joblib --n-jobs 2

pretrain-c8: $(STAMP) ## retrain the 8-class embedded model of the class split (dataset=embedded_8_2)
	$(VENV)/bin/ttabench pretrain --classes 8 --out ttabench/models/weights/embedded_resnet8_c8.pt

pretrain-iabn: $(STAMP) ## retrain the embedded model's IABN twin (for NOTE's official protocol)
	$(VENV)/bin/ttabench pretrain --norm iabn --out ttabench/models/weights/embedded_resnet8_iabn.pt

reference-quick: $(STAMP) ## the same pipeline on a tiny dataset, into outputs/reference_quick/
	$(PY) scripts/reference_results.py --quick
