"""Clocks and workers: where the link's requests run, injectable so that tests drive the client
in virtual time (:class:`ManualClock`, :class:`InlineWorker`) and production runs one daemon
thread (:class:`MonotonicClock`, :class:`ThreadWorker`).

Apart from the link because the *when* (a thread, or virtual time) is swappable while the
*what* (serve a request, back off, reconnect) is not.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Protocol

from policy_export.errors import first_line
from policy_export.runtime.realtime.link import _Dead, _Link

log = logging.getLogger(__name__)


# -- clocks and workers: injectable, so tests run in virtual time ----------------------------------


class Clock(Protocol):
    def now(self) -> float:
        """Seconds, monotonic."""
        ...


class MonotonicClock:
    """The real clock (``time.monotonic``)."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told (tests, simulations)."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = float(t)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def set(self, t: float) -> None:
        self.t = float(t)


class ThreadWorker:
    """One daemon thread serving the mailbox; ``close()`` stops and joins it."""

    virtual = False

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._signal = threading.Event()
        self._thread: threading.Thread | None = None
        self._link: _Link | None = None

    def start(self, link: _Link) -> None:
        self._link = link
        self._thread = threading.Thread(target=self._run, name="policy-export-realtime", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._link is not None
        try:
            while not self._stop.is_set():
                request = self._link.mailbox.take(block=True)
                if request is not None and not self._stop.is_set():
                    self._link.serve(request)
        except Exception as exc:  # a bug, not a server fault: never leave the robot waiting on a dead thread
            log.exception("realtime worker failed")
            self._link.emit(_Dead(time.monotonic(), f"the worker thread failed: {first_line(exc)}"))

    @property
    def native_id(self) -> int | None:
        """The worker thread's kernel id (its scheduling can be changed by it), None before start."""
        return None if self._thread is None else self._thread.native_id

    def kick(self, now: float) -> None:
        """Nothing to do: posting to the mailbox wakes the thread."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float) -> bool:
        return not self._stop.wait(seconds)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def notify(self) -> None:
        self._signal.set()

    def await_events(self, timeout_s: float) -> bool:
        self._signal.wait(timeout_s)
        self._signal.clear()
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Ask the thread to stop (it finishes the backend call in flight)."""
        self._stop.set()
        if self._link is not None:
            self._link.mailbox.close()

    def close(self, timeout_s: float) -> bool:
        """Stop the thread; True when it has ended (a backend call in flight ends at its deadline)."""
        self.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True


class InlineWorker:
    """The worker's code run on the caller's thread in virtual time: deterministic tests and
    zero-latency parity.

    A request runs when the client hands it over and the (virtual) worker is idle. Its events
    are stamped with :attr:`clock`, which starts at the client's time and moves only by what
    the backend charges to it (a test backend calls ``worker.clock.advance(latency)``) and by
    backoff waits; the client applies them when its own clock reaches them, exactly as if a
    thread had been busy that long.
    """

    virtual = True

    def __init__(self) -> None:
        self.clock = ManualClock()
        self._busy_until = -math.inf
        self._stopped = False
        self._link: _Link | None = None

    def start(self, link: _Link) -> None:
        self._link = link

    def kick(self, now: float) -> None:
        if self._stopped or now < self._busy_until or self._link is None:
            return
        request = self._link.mailbox.take()
        if request is None:
            return
        self.clock.set(now)
        self._link.serve(request)
        self._busy_until = self.clock.now()

    def now(self) -> float:
        return self.clock.now()

    def wait(self, seconds: float) -> bool:
        self.clock.advance(seconds)
        return not self._stopped

    @property
    def stopped(self) -> bool:
        return self._stopped

    def notify(self) -> None:
        pass

    def await_events(self, timeout_s: float) -> bool:
        """Run a waiting request now, however busy the virtual worker is; False when nothing can come."""
        if self._link is None or self._stopped:
            return False
        request = self._link.mailbox.take()
        if request is None:
            return False
        self.clock.set(max(self.clock.now(), request.time))
        self._link.serve(request)
        self._busy_until = self.clock.now()
        return True

    def stop(self) -> None:
        self._stopped = True

    def close(self, timeout_s: float) -> bool:
        self._stopped = True
        return True
