# Two commands matter: `make run` and `make test`. Both bootstrap .venv on a fresh
# machine with only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config.yaml

.PHONY: run test lint bench eval fuzz clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,lint,fast]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m bot serve --config $(CONFIG)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

# The suite's property tests (tests/test_fuzz_*.py) with 30 times as many examples.
fuzz: $(VENV)/.installed-test
	BOT_FUZZ_PROFILE=fuzz $(PY) -m pytest -q -s -o timeout=3600 tests/test_fuzz_*.py

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check bot tests bench
	$(VENV)/bin/mypy

bench: $(VENV)/.installed-test
	$(PY) bench/run.py $(if $(PROFILE),--profile) $(BENCH_ARGS)

# Detection on labelled texts: rules alone, rules + seed model, rules + classifier k-fold.
EVAL_DATA ?= ../shared/data/spam-dev.jsonl
eval: $(VENV)/.installed
	$(PY) bench/eval.py $(EVAL_DATA)

clean:
	rm -rf $(VENV) .pytest_cache
