# Two commands do everything: `make setup` then `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-gpu clean

setup:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned: the CPU build on a developer machine's local disk; on a GPU box pip takes the CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev,bench]"

# The README's refusal table must be the committed tests/faults/REFUSALS.md. Checked before the suite: a full
# fault-suite run rewrites REFUSALS.md, and its fuzz counts vary run to run (fuzzed headers hold temp paths).
test:
	$(PY) tests/faults/update_readme.py --check
	$(PY) -m pytest -q

test-gpu:
	$(PY) -m pytest -q -m gpu

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
