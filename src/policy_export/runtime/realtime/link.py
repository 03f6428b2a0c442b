"""The worker's side of the link: the requests and events it trades with the client through a
one-slot mailbox, :class:`_Link`, which runs a request, classifies failures, backs off and
reconnects, and the :class:`Worker` protocol it is run by (the workers themselves are in
:mod:`~policy_export.runtime.realtime.worker`, which imports this module, never the reverse).

Apart from the client because this code runs only on the worker (a thread, or virtual time
in tests) and talks to the caller only through events: keeping it here keeps that line visible.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from policy_export.errors import BadInputError, PolicyExportError, first_line
from policy_export.runtime.backends import CoreHandle, ModelChangedError
from policy_export.runtime.host import FeedFn
from policy_export.runtime.realtime.settings import RealtimeSettings
from policy_export.runtime.session import Session

#: Consecutive failed calls before the worker reconnects: one may be a blip, two are not.
FAILURES_BEFORE_RECONNECT = 2


@dataclass(frozen=True)
class _Request:
    step: int
    time: float
    episode: int
    feed: FeedFn


@dataclass(frozen=True)
class _Event:
    time: float


@dataclass(frozen=True)
class _Chunk(_Event):
    episode: int
    step: int
    actions: np.ndarray  # [chunk_size, action_dim]
    latency_s: float


@dataclass(frozen=True)
class _Failure(_Event):
    message: str


@dataclass(frozen=True)
class _Reconnecting(_Event):
    backoff_s: float


@dataclass(frozen=True)
class _Reconnected(_Event):
    where: str


@dataclass(frozen=True)
class _Dead(_Event):
    reason: str


@dataclass(frozen=True)
class _InputProblem(_Event):
    error: PolicyExportError


class _Mailbox:
    """One slot: a newer observation overwrites an untaken one (never a backlog)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: _Request | None = None
        self._closed = False

    def post(self, request: _Request) -> None:
        with self._cond:
            self._item = request
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._item = None

    def take(self, block: bool = False) -> _Request | None:
        with self._cond:
            if block:
                self._cond.wait_for(lambda: self._item is not None or self._closed)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Worker(Protocol):
    """Runs the link's requests off the caller's thread (or, for tests, in virtual time)."""

    #: Events carry virtual timestamps: the client applies them once its clock reaches them.
    virtual: bool

    @property
    def stopped(self) -> bool: ...
    def start(self, link: _Link) -> None: ...
    def kick(self, now: float) -> None: ...
    def now(self) -> float: ...
    def wait(self, seconds: float) -> bool: ...
    def notify(self) -> None: ...
    def await_events(self, timeout_s: float) -> bool: ...
    def stop(self) -> None: ...
    def close(self, timeout_s: float) -> bool: ...


class _Link:
    """The worker's side: run requests, classify failures, back off, reconnect.

    Runs only on the worker (thread or virtual); talks to the caller through events.
    """

    def __init__(
        self, client: Session, settings: RealtimeSettings, worker: Worker, emit: Callable[[_Event], None]
    ) -> None:
        self.client = client
        self.settings = settings
        self.worker = worker
        self.emit = emit
        self.mailbox = _Mailbox()
        self.requests = 0
        self.failures = 0
        self.backoff = settings.reconnect_initial_backoff_s
        self.offline_since: float | None = None
        self.last_message = ""
        self.retired: list[CoreHandle] = []
        self.reconnect_needed = False
        self.dead = False

    def serve(self, request: _Request) -> None:
        """One request to its end: a chunk, an input problem, DEAD, or the worker stopping."""
        w = self.worker
        while not self.dead and not w.stopped:
            try:
                feed = request.feed(None)
            except PolicyExportError as exc:  # the observation itself (NaN, a float frame in 0-255, ...)
                self.emit(_InputProblem(w.now(), exc))
                return
            except Exception as exc:  # e.g. an array that is not numbers: still the observation's fault
                self.emit(
                    _InputProblem(w.now(), BadInputError(f"observation could not be converted: {first_line(exc)}"))
                )
                return
            try:
                if self.reconnect_needed:
                    self._reconnect()
                self.requests += 1
                t0 = w.now()
                chunk = self.client.backend.infer(feed)
                t1 = w.now()
            except ModelChangedError as exc:
                self.dead = True
                self.emit(_Dead(w.now(), str(exc)))
                return
            except Exception as exc:
                if self._failed(exc):
                    return
                request = self.mailbox.take() or request  # retry with the newest observation
                continue
            self.failures, self.offline_since = 0, None
            self.backoff = self.settings.reconnect_initial_backoff_s
            self.emit(_Chunk(t1, request.episode, request.step, np.asarray(chunk, np.float32)[0], t1 - t0))
            self.close_retired()
            return

    def _failed(self, exc: Exception) -> bool:
        """Count a failure; True when the request is abandoned (DEAD, or the worker stopping)."""
        w, s = self.worker, self.settings
        now = w.now()
        message = str(exc) if isinstance(exc, PolicyExportError) else first_line(exc)
        self.failures += 1
        self.offline_since = now if self.offline_since is None else self.offline_since
        self.last_message = message
        self.emit(_Failure(now, message))
        if self._offline_too_long(now):
            return True
        if self.failures >= FAILURES_BEFORE_RECONNECT:
            self.emit(_Reconnecting(now, self.backoff))
            if not self._await_server(now + self.backoff):
                return True
            self.backoff = min(2 * self.backoff, s.reconnect_max_backoff_s)
            self.reconnect_needed = True
        return False

    def _offline_too_long(self, now: float) -> bool:
        s = self.settings
        if self.offline_since is None or now - self.offline_since <= s.max_offline_s:
            return False
        self.dead = True
        self.emit(
            _Dead(
                now,
                f"offline for {now - self.offline_since:.1f} s > max_offline_s {s.max_offline_s:g}: {self.last_message}",
            )
        )
        return True

    def _await_server(self, not_before: float) -> bool:
        """Wait for the moment of the next full reconnect; False when the worker stops or the link dies.

        The backend is probed every ``reconnect_probe_interval_s`` (``CoreHandle.probe``: a TCP
        connect for Triton). While it is down nothing else is tried. Once it accepts again after
        being seen down (a restart), the reconnect starts at once: the backoff alone held a
        client 7 s past a restarted server's readiness. A server that never looked down (it
        accepts but calls fail) waits out the backoff, which is what spaces a fleet's attempts.
        A backend that cannot be probed (in-process) waits the backoff as before.
        """
        w = self.worker
        seen_down = False
        while True:
            now = w.now()
            up = self.client.backend.probe()
            if up is None:
                return w.wait(max(0.0, not_before - now))
            if up and (seen_down or now >= not_before):
                return True
            if not up:
                seen_down = True
                if self._offline_too_long(now):
                    return False
            pause = self.settings.reconnect_probe_interval_s
            if up:  # up but not yet due: sleep to the backoff's end, still probing for a drop
                pause = min(pause, not_before - now)
            if not w.wait(pause):
                return False

    def _reconnect(self) -> None:
        self.close_retired()
        old = self.client.backend
        new = old.reconnect()  # Triton: the next replica, same model or ModelChangedError
        if new is not None:
            self.client.backend = new
            # Closed once the new backend has answered: closing a gRPC client waits (up to 0.2 s)
            # for its connectivity poller, time the first chunk after a restart should not wait.
            self.retired.append(old)
            self.emit(_Reconnected(self.worker.now(), new.where))
        self.reconnect_needed = False

    def close_retired(self) -> None:
        """Close the backends replaced by reconnects (the worker after a chunk; the client at close)."""
        while True:
            try:
                backend = self.retired.pop()
            except IndexError:  # empty (the worker and close() may both get here)
                return
            backend.close()
