"""A real Triton server for tests: reusable, loopback-only, time-bounded.

Usage (any test module; ``tests/`` is on sys.path under pytest)::

    from triton_harness import triton_server

    @pytest.fixture(scope="module")          # one server per module: start-up costs seconds
    def server(tmp_path_factory):
        repo = tmp_path_factory.mktemp("repo")
        ...                                   # write models, e.g. policy_export.triton.repo.write_version
        with triton_server(repo) as srv:      # waits until every model is READY
            yield srv

    def test_x(server):
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient(server.grpc_url)   # "127.0.0.1:PORT"
        ...                                   # tritonclient.http takes server.http_url the same way

The yielded object is a ``policy_export.triton.server.TritonServer``: ``http_url`` and
``grpc_url`` (``host:port``, the form tritonclient takes), ``startup_seconds``,
``log_tail()`` (error lines + last lines of the server log, for assertion messages), and
``stop()`` (returns the server's exit code; the context manager calls it anyway).

What it does: finds ``tritonserver`` in the server virtualenv (``.venv-triton`` at the repo
root, or $POLICY_EXPORT_TRITON_VENV; made by ``make triton-venv``), prepares a backend folder
(Python backend + the Python 3.12 stub from the wheel's ``python_backend_stubs`` + the
``onnxruntime`` TEST STAND-IN, so unmodified ``onnxruntime_onnx`` configs load), starts the
server on 127.0.0.1 with free ports and the environment it needs (LD_LIBRARY_PATH with the
Python LIBDIR and nvidia_pytriton.libs, PATH starting with the venv's bin), waits for
``/v2/health/ready`` (at most ``startup_timeout_s``), and on exit sends SIGTERM, waits, and
kills the process group if it does not stop in time.

When the server venv is absent the test is SKIPPED with the reason and the fix, except under
CI (``CI`` set), where it FAILS: CI runs ``make test``, which builds the venv first, so a
missing server there is a bug, not a reason to skip.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy_export.errors import UnavailableError
from policy_export.triton.install import VENV_ENV, ServerInstall, find_server
from policy_export.triton.server import TritonServer

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_VENV = Path(os.environ.get(VENV_ENV, REPO_ROOT / ".venv-triton"))


def require_server() -> ServerInstall:
    """The server install; skips (locally) or fails (under CI) the calling test when it is missing."""
    try:
        return find_server(SERVER_VENV)
    except UnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Triton server venv missing under CI: {exc}")
        pytest.skip(f"Triton server not available: {exc}")


@contextlib.contextmanager
def triton_server(repo_dir: Path, *, startup_timeout_s: float = 180.0) -> Iterator[TritonServer]:
    """Serve ``repo_dir`` with a real tritonserver on loopback; always stopped on exit."""
    server = TritonServer(repo=Path(repo_dir), install=require_server(), startup_timeout_s=startup_timeout_s)
    try:
        with server:
            yield server
    finally:
        server.cleanup()
