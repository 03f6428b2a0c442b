"""A real S3-protocol server on loopback for tests: moto's server, one process per use, always stopped.

Dummy credentials only (moto accepts any); the environment they are set in is the caller's
(``s3_env``), so tests never read or print real AWS settings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy_export.triton.server import free_port

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "policy-export-test",
    "AWS_SECRET_ACCESS_KEY": "policy-export-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def moto_command(port: int) -> list[str]:
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]')")
    return [exe, "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def moto_s3(startup_s: float = 30.0, *, auth: bool = False) -> Iterator[str]:
    """Yield the endpoint ``http://127.0.0.1:PORT`` of a fresh moto server. ``auth``: moto checks every
    request's credentials against its IAM (``INITIAL_NO_AUTH_ACTION_COUNT=0``), so unknown keys are refused
    by the server itself (403), as a real S3 refuses wrong credentials."""
    port = free_port()
    env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if auth else {})}
    proc = subprocess.Popen(
        moto_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not answer") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def s3_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in [k for k in env if k.startswith("AWS_")]:
        del env[key]
    env.update(DUMMY_ENV)
    return env
