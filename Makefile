# Two entry points, both safe on a fresh clone: `make demo` and `make test`.
# The virtualenv is created on first use from pyproject.toml (Python 3.12, see .python-version).
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12), f"need Python 3.12 (see .python-version), got {sys.version.split()[0]}"'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,bench,gpu]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/policy-export demo --out-dir demo-output

test: $(STAMP)
	$(VENV)/bin/ruff check src wrappers tests examples noxfile.py
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) demo-output .pytest_cache
