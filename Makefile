# Every target creates .venv when it is missing and runs inside it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sdlab-installed
NOTEBOOK ?= notebooks/00_start_here.ipynb
PORT   ?= 8888

.PHONY: setup lab demo test test-fast bench present clean-outputs lock

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) ## install sdlab and everything the notebooks and tests need into .venv

lab: setup ## start JupyterLab on the tour notebook
	$(BIN)/jupyter lab --notebook-dir=. $(NOTEBOOK)

demo: setup ## headless: a labelled seed x guidance grid from the shapes world into outputs/
	$(BIN)/sdlab demo --out outputs

present: setup ## serve a notebook as a code-free app (Voila) for a projector
	$(BIN)/voila --port=$(PORT) $(NOTEBOOK)

test: setup ## the whole suite, slow tests, browser tests (tests/browser) and notebooks included (what CI runs)
	@.ci/install-chromium
	$(BIN)/python -m pytest -q --durations=5 tests
	$(BIN)/python -m pytest -q --durations=5 --nbmake --nbmake-timeout=600 notebooks/[0-9]*.ipynb

test-fast: setup ## the suite without slow tests
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup ## speed and memory figures against their targets
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-outputs:
	rm -rf outputs

lock: ## re-resolve the newest versions pyproject.toml allows in a fresh venv and freeze them into constraints.txt
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet "torch==$$(sed -n 's/^torch==//p' constraints.txt)" -e ".[dev]"
	{ sed -n '1,2p' constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable | sed 's/^torch==\([^+]*\)+.*/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock
	@echo "constraints.txt updated: run 'make test' (it reinstalls from the new lock), then commit"
