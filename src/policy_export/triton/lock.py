"""One writer per model at a time: a lock file per model in the repository (``REPO/.NAME.lock``, ``fcntl.flock``).

Concurrent ``triton-repo`` writers of one model take turns, and each decides what to keep
from the repository as it is under the lock (:mod:`policy_export.triton.repo`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from policy_export.errors import BadInputError

#: How long a writer waits for another writer of the same model by default (copying a large plan takes a while).
LOCK_WAIT_S = 300.0
_LOCK_POLL_S = 0.1


def lock_path(repo: Path, name: str) -> Path:
    """The model's lock file: in the repository, beside (never inside) the model folder that gets swapped.

    A hidden *file*: Triton loads every sub-folder of a repository as a model but ignores files.
    Lock files are never deleted (deleting one while another writer waits on it would let a third
    writer lock a new file and run alongside the second).
    """
    return repo / f".{name}.lock"


@contextlib.contextmanager
def model_lock(
    repo: Path, name: str, wait_s: float = LOCK_WAIT_S, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold ``fcntl.flock`` on the model's lock file: one writer per model at a time, across processes.

    Another writer holding it: ``on_wait`` gets one message and this waits up to ``wait_s``
    (polling; ``flock`` itself cannot time out), then fails with one line. The kernel drops the
    lock when its holder dies, so a killed writer never leaves the model locked.
    """
    import fcntl

    path = lock_path(repo, name)
    try:
        # O_NOFOLLOW: a (dangling) symlink planted where the lock goes would make O_CREAT create its
        # target, a file anywhere outside the repository; refused instead (ELOOP).
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadInputError(
                f"{path}: is a symbolic link where the model's lock file goes; a lock is never created through "
                "a link (it could point outside the repository): remove the link and run again"
            ) from exc
        raise BadInputError(
            f"{path}: cannot create the model's lock file ({exc.strerror}); check the repository's permissions"
        ) from exc
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                raise BadInputError(
                    f"{repo / name}: another triton-repo write to this model still holds {path.name} "
                    f"after {wait_s:g} s; wait for it to finish and run again, or raise --lock-wait"
                )
            if not told and on_wait is not None:
                on_wait(f"waiting for another triton-repo write to {repo / name} to finish (lock {path.name})")
                told = True
            time.sleep(_LOCK_POLL_S)
        yield  # the file stays empty and untouched: a refused write leaves the repository byte for byte as it was
    finally:
        os.close(fd)  # releases the lock
