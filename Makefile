# The two commands a new user needs: `make run` and `make test`. Each one builds what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench train clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamp files make re-runs instant; they depend on pyproject.toml so a new dependency is picked up.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-train: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/python run_bot.py

test: $(VENV)/.installed-test
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

bench: $(VENV)/.installed-test
	$(BIN)/python bench/match.py
	$(BIN)/python bench/detect.py

# Rebuild the shipped model (config/model/) from corpus/train and the operator's labels in the database.
train: $(VENV)/.installed-train
	$(BIN)/python run_bot.py train

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
