"""``RealtimeClient``: the robot loop's side, which reads the buffer, posts observations to the
worker, folds in its events and runs the state machine (see :mod:`policy_export.runtime.realtime`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from policy_export.errors import BadInputError, UnavailableError
from policy_export.percentile import percentile
from policy_export.runtime.host import FeedFn
from policy_export.runtime.realtime.buffers import Tick, _EnsembleBuffer, _ReplaceBuffer
from policy_export.runtime.realtime.link import (
    Worker,
    _Chunk,
    _Dead,
    _Event,
    _Failure,
    _InputProblem,
    _Link,
    _Reconnected,
    _Reconnecting,
    _Request,
)
from policy_export.runtime.realtime.priority import CONTROL_FIFO_PRIORITY, FifoThread
from policy_export.runtime.realtime.settings import (
    DEFAULT_BUFFER_TIME_S,
    ENV,
    LATENCY_MARGIN,
    LATENCY_RECENT,
    LATENCY_WINDOW,
    ControlPriority,
    Fallback,
    Merge,
    RealtimeDeadError,
    RealtimeSettings,
    State,
)
from policy_export.runtime.realtime.worker import Clock, MonotonicClock, ThreadWorker
from policy_export.runtime.rtc import RTCSettings, rtc_feed, rtc_settings
from policy_export.runtime.session import HasSession, Session, task_of

log = logging.getLogger(__name__)


StateCallback = Callable[[State, State, str], None]


class RealtimeClient:
    """One robot's real-time policy: ``select_action`` returns this tick's action in bounded time.

    ``client``: a :class:`~policy_export.runtime.PolicyClient` or a
    :class:`~policy_export.runtime.session.Session` (owned from now on: ``close()`` closes it); only
    its session is used (adapter, host side, backend, output), never a client's own state.
    ``fps`` and ``**options``: :class:`RealtimeSettings` (or pass ``settings=``).
    ``on_state_change(old, new, reason)`` is called on the caller's thread at the tick a
    transition is seen; every transition is also one log line. ``clock`` / ``worker``: see
    :class:`ManualClock` and :class:`InlineWorker` (tests). ``rtc=True`` is ``merge="rtc"``
    (real-time chunking, for a model whose core takes RTC inputs: each request carries the buffer's
    unexecuted rest and the expected delay; see :mod:`policy_export.runtime.rtc`).
    ``ensemble_coeff``: ensemble with this coefficient a model that does not ensemble itself.
    """

    def __init__(
        self,
        client: HasSession | Session,
        fps: float | None = None,
        *,
        settings: RealtimeSettings | None = None,
        on_state_change: StateCallback | None = None,
        clock: Clock | None = None,
        worker: Worker | None = None,
        rtc: bool = False,
        ensemble_coeff: float | None = None,
        **options: Any,
    ) -> None:
        if rtc:  # shorthand for merge="rtc"
            given = settings.merge if settings is not None else options.get("merge")
            if given not in (None, Merge.RTC, "rtc"):
                raise BadInputError(f"rtc=True with merge={given!r}: RTC is a merge of its own; give one of the two")
            if settings is not None:
                settings = dataclasses.replace(settings, merge=Merge.RTC)
            else:
                options["merge"] = Merge.RTC
        if settings is None:
            if fps is None:
                raise BadInputError("RealtimeClient needs fps: the robot loop's control rate in Hz (INFERENCE_FPS)")
            unknown = sorted(set(options) - set(ENV))
            if unknown:
                raise BadInputError(f"unknown RealtimeClient setting(s) {', '.join(unknown)}; known: {', '.join(ENV)}")
            settings = RealtimeSettings(fps, **options)
        self.client = client
        self.session: Session = client if isinstance(client, Session) else client.session
        self.metadata = self.session.metadata
        spec = self.metadata.spec
        # merge="ensemble" on a model that does not ensemble itself: the caller's coefficient (bench-realtime).
        coeff = spec.host.ensemble_coeff if ensemble_coeff is None else float(ensemble_coeff)
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
        if merge is Merge.ENSEMBLE and settings.buffer_time_s is not None:
            # Refused rather than ignored: whoever set it believes it paces requests, and here nothing does.
            why = "" if settings.merge else " (the model ensembles, so merge defaults to 'ensemble')"
            raise BadInputError(
                f"buffer_time_s {settings.buffer_time_s:g} (INFERENCE_BUFFER_TIME_S) has no effect with "
                f"merge='ensemble'{why}: ensembling asks for a new chunk at every step; leave buffer_time_s unset, "
                "or use merge='replace' to ask by buffered playback"
            )
        if merge is Merge.ENSEMBLE:
            self.buffer_time_s = 0.0  # not a setting here: a chunk is wanted at every step (_wants)
        elif settings.buffer_time_s is None:
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
        #: merge="rtc": the request rule and chunk geometry, and the delays (control steps) chunks really had.
        self._rtc: RTCSettings | None = None
        self._rtc_delays: deque[int] = deque(maxlen=LATENCY_RECENT)
        if merge is not Merge.RTC and settings.rtc_queue_threshold is not None:
            raise BadInputError(
                f"rtc_queue_threshold (INFERENCE_RTC_QUEUE_THRESHOLD) paces merge='rtc' only; this client merges "
                f"with {merge.value!r}: leave it unset, or use merge='rtc' (rtc=True)"
            )
        if merge is Merge.RTC:
            self._rtc = rtc_settings(self.metadata, settings.rtc_queue_threshold)
            self._buffer = _ReplaceBuffer(spec.chunk_size)  # RTC's queue holds the whole chunk (ActionQueue)
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
        self._priority: list[FifoThread] = []
        self._priority_taken = False
        self._link = _Link(self.session, settings, self.worker, self._emit)
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
        session = Session.from_triton(urls, model, version, protocol, timeout_s=timeout_s, check_inputs=check_inputs)
        try:
            return cls(session, fps, **options)
        except BaseException:
            session.close()
            raise

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> RealtimeClient:
        """``PolicyClient.from_env`` (INFERENCE_MODE, POLICY_ARTIFACT, TRITON_URL, ...) driven by the
        ``RealtimeSettings.from_env`` settings (INFERENCE_FPS, INFERENCE_FALLBACK, ...)."""
        settings = RealtimeSettings.from_env(env)
        session = Session.from_env(env)
        try:
            return cls(session, settings=settings, **kwargs)
        except BaseException:
            session.close()
            raise

    # -- the robot loop's API ----------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    def select_action(self, observation: Mapping[str, object], task: str | None = None) -> Any:
        """This tick's action ``[1, action_dim]`` in robot units (numpy, or torch for torch input).

        Never calls the model or the network: reads the buffer, and posts the observation for
        the worker when a chunk is wanted. Raises :class:`RealtimeDeadError` once ``DEAD``, and
        ``BadInputError`` for a bad observation (also one the worker found while converting it).
        """
        if self._closed:
            raise BadInputError("RealtimeClient is closed; create a new one")
        if self._state is State.DEAD:
            raise RealtimeDeadError(self._dead_reason)
        if not self._priority_taken:
            self._take_priority()
        now = self.clock.now()
        prep = self.session.prepare(observation)
        if prep.batch_size != 1:
            raise BadInputError(
                f"RealtimeClient drives one robot; the observation holds {prep.batch_size}: "
                "make one client per robot (the server batches their requests)"
            )
        feed = self.session.host.feed(prep, task_of(observation, task))
        t = self._step
        if self._first:
            self._link.mailbox.post(_Request(t, now, self._episode, self._guided(feed, t)))
            self.worker.kick(now)
            self._await_first(now)
            now = self.clock.now()
            self._first = False
        else:
            self._apply(now)
            if self._wants(t, now):
                self._want_since = now if self._want_since is None else self._want_since
                self._link.mailbox.post(_Request(t, now, self._episode, self._guided(feed, t)))
                self.worker.kick(now)
                self._apply(now)
            else:
                self._link.mailbox.clear()
        self._check_offline(now)
        action, tick = self._take(t, now)
        self._step += 1
        self.last_tick = tick
        return self.session.output(action[None], prep)

    def reset(self) -> None:
        """New episode: the buffer is emptied and the next action waits for a fresh chunk."""
        self._episode += 1
        self._buffer.clear()
        self._link.mailbox.clear()
        self._first = True
        self._want_since = None
        self.session.host.reset()

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
        timeout = float(getattr(self.session.backend, "timeout_s", 5.0)) + 5.0
        self.session.close()
        for taken in self._priority:
            taken.release()
        self._link.close_retired()
        if not self.worker.close(timeout):
            log.error("realtime worker still in a backend call %.0f s after close(); it is a daemon thread", timeout)

    def __enter__(self) -> RealtimeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"RealtimeClient({self.session.backend.name}, {s.fps:g} Hz, merge={self.merge.value}, "
            f"fallback={s.fallback.value}, "
            + ("asks every step" if self.merge is Merge.ENSEMBLE else f"buffer_time_s={self.buffer_time_s:.3g}")
            + f", state={self._state.value})"
        )

    # -- internals ----------------------------------------------------------------------------------
    def _take_priority(self) -> None:
        """SCHED_FIFO for the control thread (see :mod:`~policy_export.runtime.realtime.priority`)."""
        self._priority_taken = True
        mode = self.settings.control_priority
        if self.worker.virtual or mode is ControlPriority.NONE:
            return
        if mode is ControlPriority.AUTO and not self.session.backend.local:
            return  # the core runs elsewhere: leave this process's scheduling to its owner
        control = FifoThread.take()
        worker = getattr(self.worker, "native_id", None)
        if control is None:
            return
        self._priority.append(control)
        if worker:  # the core's thread just below: on time with no chunk is fallbacks
            self._priority += [t for t in [FifoThread.take(CONTROL_FIFO_PRIORITY - 1, worker)] if t is not None]

    def _emit(self, event: _Event) -> None:
        self._events.append(event)
        self.worker.notify()

    def _wants(self, t: int, now: float) -> bool:
        if self.merge is Merge.ENSEMBLE:
            return True  # ensembling folds in a chunk at every step it can get one
        if self._rtc is not None:
            # LeRobot's RTC engine: ask with <= queue_threshold actions left (counting this step's);
            # like replace, earlier when the server has been slower than that (LATENCY_MARGIN).
            fresh = self._buffer.arrived + self.settings.max_action_age_s > now
            left = self._buffer.remaining(t) if fresh else 0
            margin = math.ceil(LATENCY_MARGIN * max(self._recent, default=0.0) * self.settings.fps)
            return left <= max(self._rtc.queue_threshold, margin)
        # Playback that is still usable: buffered actions, up to the moment they grow too old.
        fresh_s = self._buffer.arrived + self.settings.max_action_age_s - now
        left_s = min(self._buffer.remaining(t) / self.settings.fps, fresh_s)
        ahead = max(self.buffer_time_s, LATENCY_MARGIN * max(self._recent, default=0.0))
        return left_s <= 0 or left_s < ahead

    def _guided(self, feed: FeedFn, t: int) -> FeedFn:
        """merge="rtc": the request carries the buffer's unexecuted rest from step ``t`` (robot units) and
        the delay it expects, in control steps: the largest of the last chunks' (each the steps it was
        late by, or its latency over the period rounded up, LeRobot's estimate; 0 before the first chunk). Built here, on the caller's
        thread, so that the worker never reads the buffer."""
        if self._rtc is None:
            return feed
        assert isinstance(self._buffer, _ReplaceBuffer)
        r = self._rtc
        delay = min(max(self._rtc_delays, default=0), r.chunk_size - 1)
        extra = rtc_feed([self._buffer.leftover(t)], [delay], r.chunk_size, r.action_dim)

        def build(rows: np.ndarray | None) -> dict[str, np.ndarray]:
            inputs = feed(rows)
            inputs.update(extra)
            return inputs

        return build

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
                    f"{self.session.backend.where}: no action chunk within {self.settings.startup_timeout_s:g} s "
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
                if self._rtc is not None:  # control steps the chunk took: as counted, or as its latency says
                    took = math.ceil(event.latency_s * self.settings.fps - 1e-9)
                    self._rtc_delays.append(max(self._step - event.step, took))
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
                    f"{self.session.backend.where}: {what} for {now - since:.1f} s > max_offline_s {limit:g}"
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
            level, "realtime %s: %s -> %s at step %d: %s", self.session.backend.where, old, state, self._step, reason
        )
        if self.on_state_change is not None:
            self.on_state_change(old, state, reason)
