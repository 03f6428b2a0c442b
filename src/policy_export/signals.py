"""Termination signals as an exception that unwinds like Ctrl-C: one home for every command and the server.

Why: Python's default SIGTERM/SIGHUP action kills the process where it stands, without running
``finally`` or ``__exit__``. That left ``.partial`` files and staging folders behind an export,
and left ``tritonserver`` (which runs in its own session) holding its ports with its temp folder
on disk. Raising a :class:`KeyboardInterrupt` subclass instead reuses every cleanup Ctrl-C runs.

SIGINT is mapped explicitly as well: a process started in the background by a non-interactive
shell (a CI script's ``cmd &``) inherits SIGINT *ignored*, and Python then installs no
KeyboardInterrupt handler at all, so ``kill -INT`` did nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """A termination signal, raised in the main thread; ``exit_code`` is 128 + the signal, as shells report it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def signals_as_interrupt(
    signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """Turn ``signums`` into :class:`Terminated` while the block runs (main thread only: that is
    where Python delivers signals; CliRunner tests in worker threads keep the defaults).

    Only the first signal raises: a second one arriving while the first unwinds is ignored, so it
    cannot interrupt the very cleanup that removes temp files or stops the server.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signums}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
