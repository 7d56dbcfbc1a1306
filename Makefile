# segexp's two commands. Each creates .venv on first use and installs what it needs.
#   make train [ARGS="backbone=mobilenetv2 trainer.epochs=3"]   default training, logged to ./mlflow.db
#   make train BACKEND=jax VENV=.venv-jax                         the same on JAX, no TensorFlow
#   make test  [PYTEST_ARGS="-m 'not slow'"]                     lint and the whole test suite
#   make mutation                                                 mutation testing (docs/testing.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
BACKEND ?= tensorflow
PYTEST_ARGS ?=

.PHONY: train test lint mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime-$(BACKEND)-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(BACKEND)]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

train: $(VENV)/.runtime-$(BACKEND)-installed
	KERAS_BACKEND=$(BACKEND) $(BIN)/python -m segexp.train $(ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check segexp tests

# two worker processes, each test file on one of them (its module fixtures are built once), in
# the order tests/conftest.py gives (files with slow tests first); the 20 slowest are listed
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=20 $(PYTEST_ARGS)

# mutmut over the modules and with the tests [tool.mutmut] in pyproject.toml names, from scratch
# (its cache does not notice changed tests), then the score per module against docs/testing.md;
# fails under 90 % killed in a module or with a survivor docs/testing.md does not explain.
# Too slow for CI: run it before resolving an issue that touches those modules.
mutation: $(VENV)/.dev-installed
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/python scripts/mutation_report.py

clean:
	rm -rf $(VENV) outputs data mlflow.db mlflow.db.lock mlartifacts .pytest_cache mutants
