"""Atomic writes: nothing half-written, nothing clobbered, and files others can read."""

from __future__ import annotations

import os
import stat

import pytest

from policy_export.errors import BadInputError
from policy_export.fsutil import atomic_directory, atomic_output


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_output_gets_the_mode_a_plain_open_would_give(tmp_path, umask_022):
    out = tmp_path / "deep" / "er" / "policy.onnx"  # missing folders are created
    with atomic_output(out, force=False) as tmp:
        tmp.write_bytes(b"model")
    assert out.read_bytes() == b"model"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # mkstemp alone would leave 0600
    assert [p.name for p in out.parent.iterdir()] == ["policy.onnx"]


def test_failed_output_leaves_nothing_and_keeps_the_original(tmp_path):
    out = tmp_path / "policy.onnx"
    out.write_bytes(b"original")
    with pytest.raises(BadInputError, match="--force"):
        with atomic_output(out, force=False):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output(out, force=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("export died")
    assert out.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["policy.onnx"]


def test_directory_swap_is_readable_and_atomic(tmp_path, umask_022, monkeypatch):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "1").mkdir()
        (tmp / "1" / "model.onnx").write_bytes(b"v1")
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # mkdtemp alone would leave 0700

    real_replace, calls = os.replace, []

    def second_rename_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(OSError):
        with atomic_directory(target) as tmp:
            (tmp / "2").mkdir()
    monkeypatch.undo()
    assert sorted(p.name for p in target.iterdir()) == ["1"]
    assert (target / "1" / "model.onnx").read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no staging folder left behind"


def test_unwritable_folder_is_one_bad_input_line(tmp_path, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(BadInputError, match=r"cannot write the ONNX file here \(Read-only file system\)"):
        with atomic_output(tmp_path / "policy.onnx", force=False, what="ONNX file"):
            raise AssertionError("must not be reached")
    assert list(tmp_path.iterdir()) == []
