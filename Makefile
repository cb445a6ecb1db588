# photo-embed: `make run` runs the product on this machine, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint format bench clean

install: $(VENV)/.installed

# torch and torchvision first and pinned: pip takes them from this machine's disk (see README).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/photoembed dev

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check services migrations tests
	$(BIN)/ruff format --check services migrations tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix services migrations tests
	$(BIN)/ruff format services migrations tests

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
