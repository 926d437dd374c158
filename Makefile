# The two commands a new engineer needs:
#   make run    start Creditline on 127.0.0.1:50051 with a SQLite file here (no keys needed)
#   make test   install everything the checks need, then run every check and the whole suite
# Both set up .venv by themselves from the pins in pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml clients/python/pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint protos check-protos pytest clean

$(STAMP):
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e clients/python -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/creditline serve

test: $(STAMP) lint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/buf breaking --against '.git#branch=main'
	$(BIN)/python scripts/gen_protos.py --check

pytest: $(STAMP)
	$(BIN)/python scripts/ensure_postgres.py
	$(BIN)/pytest -n 2 --dist loadfile

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
