"""The test suite's own footprint: a passing run leaves nothing in pytest's temp folders.

Why: session fixtures write checkpoints and exported models (the full-size demo policy alone is
hundreds of MB); with pytest's default retention every run kept its folders and the three newest
runs' worth piled up to 8.4 GB in the temp root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INNER = """
import pytest

@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    path = tmp_path_factory.mktemp("shared") / "model.bin"
    path.write_bytes(b"x" * 1024)
    return path

def test_writes(tmp_path, shared):
    (tmp_path / "out.bin").write_bytes(shared.read_bytes())

def test_fails_when_asked(tmp_path):
    (tmp_path / "evidence.txt").write_text("kept")
    assert not __import__("os").environ.get("INNER_FAIL")
"""


def _inner_run(tmp_path: Path, fail: bool) -> tuple[int, list[Path]]:
    """Run a two-test session with this project's pytest configuration and a private temp root."""
    (tmp_path / "test_inner.py").write_text(INNER)
    root = tmp_path / "temproot"
    root.mkdir(exist_ok=True)
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": str(root)}
    env.pop("INNER_FAIL", None)
    if fail:
        env["INNER_FAIL"] = "1"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_inner.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    return out.returncode, sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def test_a_passing_run_keeps_no_temp_folders(tmp_path):
    code, left = _inner_run(tmp_path, fail=False)
    assert code == 0
    assert left == [], f"a passing run left {[str(p) for p in left]}"


def test_a_failing_run_keeps_the_failed_tests_folder(tmp_path):
    code, left = _inner_run(tmp_path, fail=True)
    assert code == 1
    assert any(p.name == "evidence.txt" for p in left), left
    assert not any(p.name == "out.bin" for p in left), "a passing test's folder was kept"
