"""``RealtimeClient``: a robot control loop that never waits for the model, and fails safe.

``PolicyClient.select_action`` runs the core on the caller's thread whenever its queue runs
dry, so every chunk boundary blocks the robot loop for one whole inference (with temporal
ensembling: every step), and a dead server is an exception in the loop. This client keeps
the loop's timing apart from the model's:

- ``select_action(obs)`` only reads a local action buffer and hands the observation to one
  worker thread through a one-slot mailbox (newest wins; never a backlog). The worker runs
  the backend (any ``PolicyClient`` backend: ONNX Runtime, TorchScript, TensorRT, Triton),
  one request in flight.
- Every chunk is stamped with the control step of its observation. Arriving ``d`` steps
  later, its first ``d`` actions are in the past and are skipped, so the action run at step
  ``t`` is always the one predicted for step ``t``. ``merge="replace"``: the newest chunk
  replaces the rest of the buffer (a chunk is requested when the buffered playback falls
  below ``buffer_time_s``); ``merge="ensemble"``: ACT's temporal ensembling over every chunk
  covering step ``t`` (requested continuously), the shim's own arithmetic, so that with zero
  latency it is LeRobot's ``ACTTemporalEnsembler`` to the bit.
- A state machine says how healthy the link is (:class:`State`); without a usable action the
  robot gets a flagged fallback (:class:`Fallback`), after failures the worker reconnects
  with exponential backoff (Triton: the next replica, refusing any that serves another
  model), and when the link is beyond saving (``DEAD``) ``select_action`` raises one line.

The first action of an episode waits (at most ``startup_timeout_s``) for the first chunk:
before the model has spoken there is no safe action to command. Everything after that is
bounded by the buffer, never by the model. The clock and the worker are injectable
(:class:`ManualClock`, :class:`InlineWorker`), so tests drive the state machine in virtual
time with deterministic backends; nothing here sleeps to synchronise.

numpy and the standard library only, like the rest of :mod:`policy_export.runtime`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from policy_export.errors import BadInputError, PolicyExportError, UnavailableError, first_line
from policy_export.percentile import percentile
from policy_export.runtime.backends import ModelChangedError
from policy_export.runtime.client import PolicyClient
from policy_export.runtime.host import FeedFn
from policy_export.runtime.shim import ensemble_fold, ensemble_weights

log = logging.getLogger(__name__)

#: Consecutive failed calls before the worker reconnects: one may be a blip, two are not.
FAILURES_BEFORE_RECONNECT = 2
#: Chunk latencies kept for the percentiles in ``stats()``.
LATENCY_WINDOW = 1000
#: LeRobot's remote-inference default: ask for the next chunk with half a second of playback left.
DEFAULT_BUFFER_TIME_S = 0.5
#: Ask this much earlier than the slowest of the last ``LATENCY_RECENT`` chunks took to arrive.
LATENCY_MARGIN = 1.25
LATENCY_RECENT = 8


class Merge(StrEnum):
    """How a new chunk joins the actions already buffered."""

    REPLACE = "replace"
    ENSEMBLE = "ensemble"


class Fallback(StrEnum):
    """The action sent when no usable model action exists for this tick (flagged in ``last_tick``)."""

    #: The last commanded action again (a position-controlled robot stays where it was sent).
    HOLD = "hold"
    #: The last action the *model* produced (differs from ``hold`` only after a fallback of another kind).
    REPEAT_LAST = "repeat_last"
    #: All zeros: for velocity-controlled robots, where zero means stop.
    ZERO = "zero"


class State(StrEnum):
    """Health of the link to the model, most severe last."""

    CONNECTING = "CONNECTING"  #: no chunk yet
    STREAMING = "STREAMING"  #: chunks arrive when asked for
    DEGRADED = "DEGRADED"  #: asked for a chunk more than degraded_after_s ago; riding the buffer
    STALLED = "STALLED"  #: no usable action this tick: the fallback was sent
    RECONNECTING = "RECONNECTING"  #: calls keep failing; reconnecting with backoff
    DEAD = "DEAD"  #: offline longer than max_offline_s, or another model answers; select_action raises


class RealtimeDeadError(UnavailableError):
    """The client is ``DEAD``: the robot loop must stop (one line saying why)."""


def _choice[E: StrEnum](enum: type[E], value: E | str, setting: str) -> E:
    try:
        return enum(value)
    except ValueError:
        names = ", ".join(m.value for m in enum)
        raise BadInputError(f"{setting}={value!r}: use one of {names}") from None


@dataclass(frozen=True)
class RealtimeSettings:
    """How the real-time client paces requests and fails safe; ``from_env`` reads the same
    settings from ``INFERENCE_*`` variables (see :data:`ENV`)."""

    fps: float
    #: Ask for a chunk when less than this much playback is buffered (replace). None: 0.5 s
    #: (LeRobot's remote-inference default), or half a chunk's playback when that is shorter.
    #: A floor: a server slower than this is asked earlier (LATENCY_MARGIN x its recent chunk
    #: latency), so that the buffer does not run dry while the chunk is on its way.
    buffer_time_s: float | None = None
    #: None: "ensemble" when the model carries an ensembling coefficient, else "replace".
    merge: Merge | None = None
    fallback: Fallback = Fallback.HOLD
    degraded_after_s: float = 1.0
    max_action_age_s: float = 3.0
    reconnect_initial_backoff_s: float = 0.5
    reconnect_max_backoff_s: float = 10.0
    max_offline_s: float = 60.0
    #: The longest the first action of an episode may wait for the first chunk.
    startup_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.merge is not None:
            object.__setattr__(self, "merge", _choice(Merge, self.merge, "merge (INFERENCE_MERGE)"))
        object.__setattr__(self, "fallback", _choice(Fallback, self.fallback, "fallback (INFERENCE_FALLBACK)"))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("merge", "fallback") or (f.name == "buffer_time_s" and value is None):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise BadInputError(f"{f.name} ({ENV[f.name]}) must be a number of seconds/Hz, got {value!r}")
            if value < 0 or (value == 0 and f.name != "buffer_time_s"):
                raise BadInputError(f"{f.name} ({ENV[f.name]}) must be > 0, got {value!r}")
        if self.reconnect_max_backoff_s < self.reconnect_initial_backoff_s:
            raise BadInputError(
                f"reconnect_max_backoff_s {self.reconnect_max_backoff_s} < reconnect_initial_backoff_s "
                f"{self.reconnect_initial_backoff_s}: the backoff only grows; raise the maximum"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RealtimeSettings:
        """``INFERENCE_FPS`` (required), ``INFERENCE_MERGE``, ``INFERENCE_FALLBACK``, ``INFERENCE_BUFFER_TIME_S``, ..."""
        env = os.environ if env is None else env
        if not env.get(ENV["fps"]):
            raise BadInputError("INFERENCE_FPS is not set: give the robot loop's control rate in Hz, e.g. 30")
        values: dict[str, Any] = {}
        for name, var in ENV.items():
            text = (env.get(var) or "").strip()
            if not text:
                continue
            if name in ("merge", "fallback"):
                values[name] = text.lower()
                continue
            try:
                values[name] = float(text)
            except ValueError:
                raise BadInputError(f"{var}={text!r}: give a number (seconds, or Hz for INFERENCE_FPS)") from None
        return cls(**values)


#: Environment variable of each setting (``RealtimeSettings.from_env``, ``RealtimeClient.from_env``).
ENV = {f: f"INFERENCE_{f.upper()}" for f in RealtimeSettings.__dataclass_fields__}


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


class _Link:
    """The worker's side: run requests, classify failures, back off, reconnect.

    Runs only on the worker (thread or virtual); talks to the caller through events.
    """

    def __init__(
        self, client: PolicyClient, settings: RealtimeSettings, worker: Worker, emit: Callable[[_Event], None]
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
            return

    def _failed(self, exc: Exception) -> bool:
        """Count a failure; True when the request is abandoned (DEAD, or the worker stopping)."""
        w, s = self.worker, self.settings
        now = w.now()
        message = str(exc) if isinstance(exc, PolicyExportError) else first_line(exc)
        self.failures += 1
        self.offline_since = now if self.offline_since is None else self.offline_since
        self.emit(_Failure(now, message))
        if now - self.offline_since > s.max_offline_s:
            self.dead = True
            self.emit(
                _Dead(
                    now, f"offline for {now - self.offline_since:.1f} s > max_offline_s {s.max_offline_s:g}: {message}"
                )
            )
            return True
        if self.failures >= FAILURES_BEFORE_RECONNECT:
            self.emit(_Reconnecting(now, self.backoff))
            if not w.wait(self.backoff):
                return True
            self.backoff = min(2 * self.backoff, s.reconnect_max_backoff_s)
            self.reconnect_needed = True
        return False

    def _reconnect(self) -> None:
        old = self.client.backend
        new = old.reconnect()  # Triton: the next replica, same model or ModelChangedError
        if new is not None:
            self.client.backend = new
            old.close()
            self.emit(_Reconnected(self.worker.now(), new.where))
        self.reconnect_needed = False


# -- the action buffer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """What the last ``select_action`` returned, and where it came from."""

    step: int
    state: State
    #: Set when the action is a fallback (no usable model action this tick).
    fallback: Fallback | None
    #: Control step of the observation whose chunk gave the action (the newest one when ensembled).
    chunk: int | None
    #: Index of the action in that chunk (``step - chunk``).
    index: int | None
    #: Chunks averaged into the action (ensemble), 1 (replace), 0 (fallback).
    chunks: int


class _ReplaceBuffer:
    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.clear()

    def clear(self) -> None:
        self.actions: np.ndarray | None = None
        self.start = 0
        self.arrived = 0.0

    def merge(self, chunk: np.ndarray, stamp: int, t: int, arrived: float) -> int:
        """Returns the actions skipped as already in the past."""
        skip = max(t - stamp, 0)
        if skip >= self.horizon:  # nothing left for now or later: keep what is buffered
            return self.horizon
        self.actions, self.start, self.arrived = chunk[: self.horizon], stamp, arrived
        return skip

    def remaining(self, t: int) -> int:
        return 0 if self.actions is None else max(0, self.start + len(self.actions) - t)

    def take(self, t: int) -> tuple[np.ndarray, float, int, int] | None:
        if self.actions is None or not 0 <= t - self.start < len(self.actions):
            return None
        return self.actions[t - self.start], self.arrived, self.start, 1


class _EnsembleBuffer:
    """Running ensembles for steps ``start ..``, aligned by control step across chunks."""

    def __init__(self, coeff: float, chunk_size: int) -> None:
        self.weights, self.weights_cumsum = ensemble_weights(coeff, chunk_size)
        self.chunk_size = chunk_size
        self.clear()

    def clear(self) -> None:
        self.values: np.ndarray | None = None  # [n, A] for steps start .. start + n - 1
        self.count = np.zeros((0, 1), np.int64)
        self.start = 0
        self.arrived = 0.0
        self.stamp = 0

    def merge(self, chunk: np.ndarray, stamp: int, t: int, arrived: float) -> int:
        skip = max(t - stamp, 0)
        if skip >= self.chunk_size:
            return self.chunk_size
        new = chunk[skip:]  # steps t .. stamp + chunk_size - 1
        old_n = 0 if self.values is None else max(0, self.start + len(self.values) - t)
        if old_n:
            assert self.values is not None
            off = t - self.start
            n = min(old_n, len(new))
            folded, count = ensemble_fold(
                self.values[off : off + n], self.count[off : off + n], new[:n], self.weights, self.weights_cumsum
            )
            values = np.concatenate([folded, new[n:]])
            counts = np.concatenate([count, np.ones((len(new) - n, 1), np.int64)])
        else:
            values, counts = new.copy(), np.ones((len(new), 1), np.int64)
        self.values, self.count, self.start, self.arrived, self.stamp = values, counts, t, arrived, stamp
        return skip

    def remaining(self, t: int) -> int:
        return 0 if self.values is None else max(0, self.start + len(self.values) - t)

    def take(self, t: int) -> tuple[np.ndarray, float, int, int] | None:
        if self.values is None or not 0 <= t - self.start < len(self.values):
            return None
        return self.values[t - self.start], self.arrived, self.stamp, int(self.count[t - self.start, 0])


# -- the client --------------------------------------------------------------------------------------


StateCallback = Callable[[State, State, str], None]


class RealtimeClient:
    """One robot's real-time policy: ``select_action`` returns this tick's action in bounded time.

    ``client``: any :class:`PolicyClient` (owned from now on: ``close()`` closes it).
    ``fps`` and ``**options``: :class:`RealtimeSettings` (or pass ``settings=``).
    ``on_state_change(old, new, reason)`` is called on the caller's thread at the tick a
    transition is seen; every transition is also one log line. ``clock`` / ``worker``: see
    :class:`ManualClock` and :class:`InlineWorker` (tests).
    """

    def __init__(
        self,
        client: PolicyClient,
        fps: float | None = None,
        *,
        settings: RealtimeSettings | None = None,
        on_state_change: StateCallback | None = None,
        clock: Clock | None = None,
        worker: Worker | None = None,
        **options: Any,
    ) -> None:
        if settings is None:
            if fps is None:
                raise BadInputError("RealtimeClient needs fps: the robot loop's control rate in Hz (INFERENCE_FPS)")
            unknown = sorted(set(options) - set(ENV))
            if unknown:
                raise BadInputError(f"unknown RealtimeClient setting(s) {', '.join(unknown)}; known: {', '.join(ENV)}")
            settings = RealtimeSettings(fps, **options)
        self.client = client
        self.metadata = client.metadata
        spec = self.metadata.spec
        coeff = spec.temporal_ensemble_coeff
        merge = settings.merge or (Merge.ENSEMBLE if coeff is not None else Merge.REPLACE)
        if merge is Merge.ENSEMBLE and coeff is None:
            raise BadInputError(
                "merge='ensemble' needs the model's temporal_ensemble_coeff and this model has none "
                "(it was trained with an action queue); use merge='replace'"
            )
        self.settings, self.merge = settings, merge
        # A queue model plays n_action_steps of each chunk; an ensembling one (n_action_steps 1) all of it.
        horizon = spec.chunk_size if coeff is not None else spec.n_action_steps
        playback = horizon / settings.fps
        if settings.buffer_time_s is None:
            self.buffer_time_s = min(DEFAULT_BUFFER_TIME_S, playback / 2)
        elif merge is Merge.REPLACE and settings.buffer_time_s > playback:
            raise BadInputError(
                f"buffer_time_s {settings.buffer_time_s:g} is longer than a chunk's playback ({horizon} actions "
                f"at {settings.fps:g} Hz = {playback:.3g} s): set buffer_time_s (INFERENCE_BUFFER_TIME_S) <= {playback:.3g}"
            )
        else:
            self.buffer_time_s = settings.buffer_time_s
        self._buffer: _ReplaceBuffer | _EnsembleBuffer = (
            _EnsembleBuffer(float(coeff), spec.chunk_size)
            if merge is Merge.ENSEMBLE and coeff is not None
            else _ReplaceBuffer(horizon)
        )
        self.on_state_change = on_state_change
        self.clock: Clock = clock or MonotonicClock()
        self.worker: Worker = worker or ThreadWorker()
        self._events: deque[_Event] = deque()
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._recent: deque[float] = deque(maxlen=LATENCY_RECENT)
        now = self.clock.now()
        self._state = State.CONNECTING
        self._time_in = dict.fromkeys(State, 0.0)
        self._last_tick_time = now
        self._step = 0
        self._episode = 0
        self._first = True
        self._want_since: float | None = None
        self._offline_since: float | None = None
        self._reconnecting = False
        self._received_any = False
        self._dead_reason = ""
        self._last_error = ""
        self._last_action: np.ndarray | None = None
        self._last_model_action: np.ndarray | None = None
        self._counts = dict.fromkeys(
            ("chunks_received", "actions_skipped_latency", "stale_dropped", "fallback_ticks", "reconnects", "failures"),
            0,
        )
        self.last_tick: Tick | None = None
        self._closed = False
        self._link = _Link(client, settings, self.worker, self._emit)
        self.worker.start(self._link)

    # -- construction shorthands -----------------------------------------------------------------
    @classmethod
    def from_triton(
        cls,
        urls: str | Sequence[str],
        model: str,
        version: str | int | None = None,
        protocol: str | None = None,
        *,
        fps: float,
        timeout_s: float | None = None,
        check_inputs: bool = True,
        **options: Any,
    ) -> RealtimeClient:
        """A Triton model behind one or several replica URLs (a reconnect tries the next one and
        refuses any replica serving another model)."""
        client = PolicyClient.from_triton(
            urls, model, version, protocol, timeout_s=timeout_s, check_inputs=check_inputs
        )
        try:
            return cls(client, fps, **options)
        except BaseException:
            client.close()
            raise

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> RealtimeClient:
        """``PolicyClient.from_env`` (INFERENCE_MODE, POLICY_ARTIFACT, TRITON_URL, ...) driven by the
        ``RealtimeSettings.from_env`` settings (INFERENCE_FPS, INFERENCE_FALLBACK, ...)."""
        settings = RealtimeSettings.from_env(env)
        client = PolicyClient.from_env(env)
        try:
            return cls(client, settings=settings, **kwargs)
        except BaseException:
            client.close()
            raise

    # -- the robot loop's API ----------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    def select_action(self, observation: Mapping[str, Any]) -> Any:
        """This tick's action ``[1, action_dim]`` in robot units (numpy, or torch for torch input).

        Never calls the model or the network: reads the buffer, and posts the observation for
        the worker when a chunk is wanted. Raises :class:`RealtimeDeadError` once ``DEAD``, and
        ``BadInputError`` for a bad observation (also one the worker found while converting it).
        """
        if self._closed:
            raise BadInputError("RealtimeClient is closed; create a new one")
        if self._state is State.DEAD:
            raise RealtimeDeadError(self._dead_reason)
        now = self.clock.now()
        prep = self.client.adapter(observation)
        if prep.batch_size != 1:
            raise BadInputError(
                f"RealtimeClient drives one robot; the observation holds {prep.batch_size}: "
                "make one client per robot (the server batches their requests)"
            )
        feed = self.client.host.feed(prep)
        t = self._step
        if self._first:
            self._link.mailbox.post(_Request(t, now, self._episode, feed))
            self.worker.kick(now)
            self._await_first(now)
            now = self.clock.now()
            self._first = False
        else:
            self._apply(now)
            if self._wants(t, now):
                self._want_since = now if self._want_since is None else self._want_since
                self._link.mailbox.post(_Request(t, now, self._episode, feed))
                self.worker.kick(now)
                self._apply(now)
            else:
                self._link.mailbox.clear()
        self._check_offline(now)
        action, tick = self._take(t, now)
        self._step += 1
        self.last_tick = tick
        return self.client._output(action[None], prep)

    def reset(self) -> None:
        """New episode: the buffer is emptied and the next action waits for a fresh chunk."""
        self._episode += 1
        self._buffer.clear()
        self._link.mailbox.clear()
        self._first = True
        self._want_since = None
        self.client.host.reset()

    def stats(self) -> dict[str, Any]:
        """Counters and timings since the client started (safe to call from another thread)."""
        now = self.clock.now()
        with self._lock:
            lat = np.array(self._latencies, dtype=np.float64) * 1e3
            counts = dict(self._counts)
        time_in = dict(self._time_in)
        time_in[self._state] += max(0.0, now - self._last_tick_time)
        total = sum(time_in.values())
        return {
            "state": self._state.value,
            "merge": self.merge.value,
            "fallback": self.settings.fallback.value,
            "steps": self._step,
            "chunks_requested": self._link.requests,
            **counts,
            "chunk_ms_p50": percentile(lat, 50) if lat.size else None,
            "chunk_ms_p99": percentile(lat, 99) if lat.size else None,
            "time_in_state_s": {s.value: v for s, v in time_in.items()},
            "streaming_fraction": time_in[State.STREAMING] / total if total > 0 else 0.0,
            "last_error": self._last_error,
        }

    def close(self) -> None:
        """Stop the worker thread and close the client (which ends a network call in flight);
        the thread is joined, at the latest when its current call reaches its deadline."""
        if self._closed:
            return
        self._closed = True
        self.worker.stop()
        timeout = float(getattr(self.client.backend, "timeout_s", 5.0)) + 5.0
        self.client.close()
        if not self.worker.close(timeout):
            log.error("realtime worker still in a backend call %.0f s after close(); it is a daemon thread", timeout)

    def __enter__(self) -> RealtimeClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"RealtimeClient({self.client.backend.name}, {s.fps:g} Hz, merge={self.merge.value}, "
            f"fallback={s.fallback.value}, buffer_time_s={self.buffer_time_s:.3g}, state={self._state.value})"
        )

    # -- internals ----------------------------------------------------------------------------------
    def _emit(self, event: _Event) -> None:
        self._events.append(event)
        self.worker.notify()

    def _wants(self, t: int, now: float) -> bool:
        if self.merge is Merge.ENSEMBLE:
            return True  # ensembling folds in a chunk at every step it can get one
        # Playback that is still usable: buffered actions, up to the moment they grow too old.
        fresh_s = self._buffer.arrived + self.settings.max_action_age_s - now
        left_s = min(self._buffer.remaining(t) / self.settings.fps, fresh_s)
        ahead = max(self.buffer_time_s, LATENCY_MARGIN * max(self._recent, default=0.0))
        return left_s <= 0 or left_s < ahead

    def _await_first(self, now: float) -> None:
        deadline = now + self.settings.startup_timeout_s
        while True:
            self._apply(math.inf)
            if self._state is State.DEAD:
                raise RealtimeDeadError(self._dead_reason)
            if self._buffer.take(self._step) is not None:
                return
            remaining = deadline - self.clock.now()
            if remaining <= 0 or not self.worker.await_events(min(remaining, 0.1)):
                raise UnavailableError(
                    f"{self.client.backend.where}: no action chunk within {self.settings.startup_timeout_s:g} s "
                    f"of the episode start ({self._last_error or 'no answer'}); the robot was not moved"
                )

    def _apply(self, until: float) -> None:
        """Fold in what the worker reported (up to ``until`` on a virtual worker)."""
        if not self.worker.virtual:
            until = math.inf
        while self._events and self._events[0].time <= until:
            event = self._events.popleft()
            if isinstance(event, _Chunk):
                if event.episode != self._episode:
                    continue  # asked for before reset(): another episode's observation
                skipped = self._buffer.merge(event.actions, event.step, self._step, event.time)
                with self._lock:
                    self._latencies.append(event.latency_s)
                    self._counts["chunks_received"] += 1
                    self._counts["actions_skipped_latency"] += skipped
                self._recent.append(event.latency_s)
                self._received_any = True
                self._want_since = self._offline_since = None
                self._reconnecting = False
            elif isinstance(event, _Failure):
                self._counts["failures"] += 1
                self._last_error = event.message
                self._offline_since = event.time if self._offline_since is None else self._offline_since
            elif isinstance(event, _Reconnecting):
                self._counts["reconnects"] += 1
                self._reconnecting = True
            elif isinstance(event, _Reconnected):
                log.info("realtime: reconnected to %s", event.where)
            elif isinstance(event, _Dead):
                self._die(event.reason)
            elif isinstance(event, _InputProblem):
                raise event.error

    def _check_offline(self, now: float) -> None:
        limit = self.settings.max_offline_s
        for since, what in ((self._offline_since, "offline"), (self._want_since, "without a chunk")):
            if since is not None and now - since > limit:
                self._die(
                    f"{self.client.backend.where}: {what} for {now - since:.1f} s > max_offline_s {limit:g}"
                    + (f" (last error: {self._last_error})" if self._last_error else "")
                )
        if self._state is State.DEAD:
            raise RealtimeDeadError(self._dead_reason)

    def _die(self, reason: str) -> None:
        if self._state is State.DEAD:
            return
        self._dead_reason = f"realtime client DEAD: {reason}; stop the robot loop"
        self._transition(State.DEAD, reason, self.clock.now())
        self._link.mailbox.clear()

    def _take(self, t: int, now: float) -> tuple[np.ndarray, Tick]:
        got = self._buffer.take(t)
        if got is not None and now - got[1] > self.settings.max_action_age_s:
            with self._lock:
                self._counts["stale_dropped"] += 1
            got = None
        fallback = None
        if got is not None:
            action, _, stamp, chunks = got
            action = action.copy()
            self._last_model_action = action
        else:
            fallback = self.settings.fallback
            action = self._fallback_action(fallback)
            stamp, chunks = None, 0
            with self._lock:
                self._counts["fallback_ticks"] += 1
        self._last_action = action
        if self._reconnecting:
            state, reason = State.RECONNECTING, self._last_error
        elif fallback is not None:
            state, reason = State.STALLED, f"no usable action for step {t}: sending the {fallback.value} fallback"
        elif self._want_since is not None and now - self._want_since > self.settings.degraded_after_s:
            state, reason = State.DEGRADED, f"no fresh chunk for {now - self._want_since:.2f} s"
        else:
            state, reason = State.STREAMING, "chunks arrive"
        self._transition(state, reason, now)
        index = None if stamp is None else t - stamp
        return action, Tick(t, state, fallback, stamp, index, chunks)

    def _fallback_action(self, fallback: Fallback) -> np.ndarray:
        zero = np.zeros(self.metadata.spec.action_dim, np.float32)
        if fallback is Fallback.HOLD:
            return zero if self._last_action is None else self._last_action.copy()
        if fallback is Fallback.REPEAT_LAST:
            return zero if self._last_model_action is None else self._last_model_action.copy()
        return zero

    def _transition(self, state: State, reason: str, now: float) -> None:
        self._time_in[self._state] += max(0.0, now - self._last_tick_time)
        self._last_tick_time = now
        old = self._state
        if state is old:
            return
        self._state = state
        level = logging.INFO if state in (State.STREAMING, State.CONNECTING) else logging.WARNING
        log.log(
            level, "realtime %s: %s -> %s at step %d: %s", self.client.backend.where, old, state, self._step, reason
        )
        if self.on_state_change is not None:
            self.on_state_change(old, state, reason)
