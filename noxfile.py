"""Nox sessions. Each one installs what it needs into its own virtualenv.

nox -s tests      # the unit/integration suite (same as `make test`)
nox -s lint       # ruff
nox -s parity     # export + verify a checkpoint; fails the build on a parity regression
nox -s gpu        # TensorRT + onnxruntime-gpu tests (pytest -m gpu) on an NVIDIA GPU host
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"
PYTHON = "3.12"


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.12,<0.18")
    session.run("ruff", "check", "src", "wrappers", "tests", "examples", "noxfile.py")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev,bench,gpu]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def parity(session: nox.Session) -> None:
    """Export ONNX from CHECKPOINT (env; default: the built-in demo) and gate on parity.

    Writes reports/parity.json and reports/parity.xml for the CI system to publish.
    """
    session.install("-e", ".")
    out = "reports"
    os.makedirs(out, exist_ok=True)
    checkpoint = os.environ.get("CHECKPOINT")
    if not checkpoint:
        checkpoint = f"{out}/demo-checkpoint"
        session.run(
            "python", "-c", f"from policy_export.demo import build_checkpoint; build_checkpoint({checkpoint!r})"
        )
    tolerance = os.environ.get("PARITY_TOLERANCE", "1e-4")
    session.run("policy-export", "onnx", "--checkpoint", checkpoint, "--output", f"{out}/policy.onnx", "--force")
    session.run(
        "policy-export",
        "verify",
        "--checkpoint",
        checkpoint,
        "--artifact",
        f"{out}/policy.onnx",
        "--tolerance",
        tolerance,
        "--batch-sizes",
        "1,4",
        "--report",
        f"{out}/parity.json",
        "--junit",
        f"{out}/parity.xml",
    )


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """TensorRT and ONNX Runtime CUDA tests (``pytest -m gpu``) on an NVIDIA GPU host.

    onnxruntime-gpu replaces the CPU wheel: both provide the ``onnxruntime`` module and must
    never be installed together. Polygraphy's auto-install stays off: what runs is what is pinned here.
    Bounds are what the code targets; they were not run here (no GPU on the dev/CI machines).
    """
    session.env["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"
    session.install("-e", ".[dev,gpu]")
    session.run("python", "-m", "pip", "uninstall", "--yes", "onnxruntime")
    session.install("onnxruntime-gpu>=1.22,<1.33", "tensorrt>=10.0,<11")
    session.run("pytest", "-m", "gpu", "-rs", *session.posargs)
