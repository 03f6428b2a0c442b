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
    if not os.access(path.parent, os.W_OK):
        raise BadInputError(f"{path.parent}: no permission to write the {what} here; choose another folder")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, mode: int) -> None:
    """Give a temp file/folder the mode a plain ``open``/``mkdir`` would have.

    ``mkstemp``/``mkdtemp`` create 0600/0700 entries; renamed into place as they are, an
    exported model would be unreadable to a CI job or a Triton container running as
    another user.
    """
    os.chmod(tmp, mode & ~_umask())


@contextlib.contextmanager
def atomic_output(path: Path, force: bool, what: str = "output") -> Iterator[Path]:
    """Yield a temp path in the same directory; rename it over ``path`` on success."""
    check_writable(path, force, what)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:  # e.g. a read-only mount, which os.access does not always see
        raise BadInputError(
            f"{path.parent}: cannot write the {what} here ({exc.strerror}); choose another folder"
        ) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _publish(tmp, 0o666)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: Path, staging_root: Path | None = None) -> Iterator[Path]:
    """Yield an empty temp folder; on normal exit swap it in for ``path`` (which may exist).

    The temp folder (``.<name>.*.partial``) and the displaced original (``.<name>.*.old``)
    live in ``staging_root`` (default: beside ``path``), which must be on the same
    filesystem so both renames are atomic. If the second rename fails, the original is put
    back: an interrupted or failed write leaves ``path`` exactly as it was.
    """
    root = staging_root or path.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"{root}: cannot create the output folder ({exc.strerror})") from exc
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=root))
    old: Path | None = None
    try:
        yield tmp
        _publish(tmp, 0o777)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=root))
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        if old is not None and not path.exists():
            os.replace(old, path)  # the swap failed half-way: put the original back
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str, force: bool = True) -> None:
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text)
