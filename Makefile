# Two commands: `make run` (set up, index, open the web app) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-fast lint eval bench

setup:
	scripts/setup.sh

run: setup
	$(BIN)/assistant serve

test:
	scripts/setup.sh --test
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not browser"

lint:
	$(BIN)/ruff check assistant ui tests eval scripts
	$(BIN)/ruff format --check assistant ui tests eval scripts

eval: setup
	$(BIN)/assistant eval eval/devset.jsonl --backend local --out eval/results/local
	$(BIN)/assistant eval eval/devset.jsonl --backend extractive --out eval/results/extractive
	$(BIN)/assistant eval eval/heldout.jsonl --backend local --out eval/results/heldout-local
	$(BIN)/assistant eval eval/heldout.jsonl --backend extractive --out eval/results/heldout-extractive
	$(BIN)/assistant eval eval/heldout2.jsonl --backend local --out eval/results/heldout2-local
	$(BIN)/assistant eval eval/heldout2.jsonl --backend extractive --out eval/results/heldout2-extractive
	$(BIN)/assistant eval eval/heldout3.jsonl --backend local --out eval/results/heldout3-local
	$(BIN)/assistant eval eval/heldout3.jsonl --backend extractive --out eval/results/heldout3-extractive
	$(BIN)/assistant eval eval/heldout4.jsonl --backend local --out eval/results/heldout4-local
	$(BIN)/assistant eval eval/heldout4.jsonl --backend extractive --out eval/results/heldout4-extractive
	$(BIN)/assistant eval eval/heldout5.jsonl --backend local --out eval/results/heldout5-local
	$(BIN)/assistant eval eval/heldout5.jsonl --backend extractive --out eval/results/heldout5-extractive
	$(BIN)/assistant eval eval/heldout6.jsonl --backend local --out eval/results/heldout6-local
	$(BIN)/assistant eval eval/heldout6.jsonl --backend extractive --out eval/results/heldout6-extractive
	$(BIN)/assistant eval eval/heldout7.jsonl --backend local --out eval/results/heldout7-local
	$(BIN)/assistant eval eval/heldout7.jsonl --backend extractive --out eval/results/heldout7-extractive
	$(BIN)/assistant eval eval/heldout8.jsonl --backend local --out eval/results/heldout8-local
	$(BIN)/assistant eval eval/heldout8.jsonl --backend extractive --out eval/results/heldout8-extractive
	$(BIN)/assistant eval eval/heldout9.jsonl --backend local --out eval/results/heldout9-local
	$(BIN)/assistant eval eval/heldout9.jsonl --backend extractive --out eval/results/heldout9-extractive
	$(BIN)/assistant eval eval/heldout10.jsonl --backend local --out eval/results/heldout10-local
	$(BIN)/assistant eval eval/heldout10.jsonl --backend extractive --out eval/results/heldout10-extractive
	$(BIN)/assistant eval eval/heldout11.jsonl --backend local --out eval/results/heldout11-local
	$(BIN)/assistant eval eval/heldout11.jsonl --backend extractive --out eval/results/heldout11-extractive
	$(BIN)/assistant eval eval/heldout12.jsonl --backend local --out eval/results/heldout12-local
	$(BIN)/assistant eval eval/heldout12.jsonl --backend extractive --out eval/results/heldout12-extractive
	$(BIN)/assistant eval eval/heldout13.jsonl --backend local --out eval/results/heldout13-local
	$(BIN)/assistant eval eval/heldout13.jsonl --backend extractive --out eval/results/heldout13-extractive

bench: setup
	$(BIN)/python eval/bench.py
