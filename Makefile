# Two entry points, both safe on a fresh clone: `make demo` and `make test`.
# The virtualenv is created on first use from pyproject.toml (Python 3.12, see .python-version).
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed-stamp
# The Triton server's own venv (nvidia-pytriton needs numpy < 2): the real-server tests run in `make test`.
TRITON_VENV  ?= .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed-stamp

.PHONY: demo test lint clean triton-venv sim-system-deps

# The two venvs build side by side on a fresh clone (mostly downloads and unpacking); output stays line by line
# (whole-target syncing would hold back the test run's output until it ends).
MAKEFLAGS += --jobs=2 --output-sync=line

$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12), f"need Python 3.12 (see .python-version), got {sys.version.split()[0]}"'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,bench,gpu,triton,sim,cpu-lowp]'
	@touch $(STAMP)

$(TRITON_STAMP): requirements-triton-server.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install --quiet -r requirements-triton-server.txt
	@touch $(TRITON_STAMP)

triton-venv: $(TRITON_STAMP)

# MuJoCo's headless renderers for the aloha simulator (eval --env aloha; nox -s eval_aloha): Mesa's EGL
# (eval's default, MUJOCO_GL=egl) and OSMesa (MUJOCO_GL=osmesa). Both are Mesa's llvmpipe on a CPU; measured
# equally fast here (BENCHMARKS.md). Debian/Ubuntu, as root.
sim-system-deps:
	apt-get install -y --no-install-recommends libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6

demo: $(STAMP)
	$(VENV)/bin/policy-export demo --out-dir demo-output

test: $(STAMP) $(TRITON_STAMP)
	$(VENV)/bin/ruff check src wrappers tests examples noxfile.py
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) $(TRITON_VENV) demo-output .pytest_cache
