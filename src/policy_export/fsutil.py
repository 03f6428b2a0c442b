"""Atomic, no-clobber output files.

Exports take minutes and can be interrupted; a half-written model file that looks valid
is worse than none. Everything is written to a temporary sibling and renamed into place
only once complete, and existing user artifacts are never replaced without ``--force``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from policy_export.errors import BadInputError


def check_writable(path: Path, force: bool, what: str = "output") -> None:
    """Refuse to clobber an existing file unless ``force``; create missing parent folders.

    Creating the parent is what CI users expect (``--output artifacts/policy.onnx`` on a
    clean checkout); an empty folder is not a half-written artifact.
    """
    if path.exists() and path.is_dir():
        raise BadInputError(f"{path}: {what} is a directory; give a file path")
    if path.exists() and not force:
        raise BadInputError(f"{path}: {what} already exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"{path.parent}: cannot create the output folder ({exc.strerror})") from exc


@contextlib.contextmanager
def atomic_output(path: Path, force: bool, what: str = "output") -> Iterator[Path]:
    """Yield a temp path in the same directory; rename it over ``path`` on success."""
    check_writable(path, force, what)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; swap it into place on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str, force: bool = True) -> None:
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text)
