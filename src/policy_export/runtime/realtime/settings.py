"""What the real-time client is told: its settings (arguments or ``INFERENCE_*`` variables),
the merge and fallback choices and the link states it reports.

Apart from the client so that the worker, the link and the buffers can speak the same
words without importing the client, and so that a deployment can read and check its
settings without starting anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from policy_export.errors import BadInputError, UnavailableError

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
    #: Real-time chunking (models with RTC inputs): the newest chunk replaces the buffer, computed
    #: with the buffer's unexecuted rest and the expected delay as guidance (:mod:`policy_export.runtime.rtc`).
    RTC = "rtc"


class Fallback(StrEnum):
    """The action sent when no usable model action exists for this tick (flagged in ``last_tick``)."""

    #: The last commanded action again (a position-controlled robot stays where it was sent).
    HOLD = "hold"
    #: The last action the *model* produced (differs from ``hold`` only after a fallback of another kind).
    REPEAT_LAST = "repeat_last"
    #: All zeros: for velocity-controlled robots, where zero means stop.
    ZERO = "zero"


class ControlPriority(StrEnum):
    """Scheduling of the thread that calls ``select_action`` (the robot's control loop)."""

    #: ``fifo`` when the core runs in this process (its inference competes for these cores), else ``none``.
    AUTO = "auto"
    #: SCHED_FIFO (Linux real-time) while the client is open, where the process may (root,
    #: CAP_SYS_NICE or an rtprio limit); otherwise one log line and the thread is left as it was.
    FIFO = "fifo"
    #: Leave the thread's scheduling alone.
    NONE = "none"


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
    #: While reconnecting, how often the server is probed (a TCP connect: no RPC, no channel).
    #: A server seen down and then accepting again is reconnected to at once, however long the
    #: backoff; the backoff spaces only full reconnects to a server that looks up but keeps
    #: failing (overloaded, frozen, still loading), which is the connection storm it is for.
    reconnect_probe_interval_s: float = 0.2
    max_offline_s: float = 60.0
    #: The longest the first action of an episode may wait for the first chunk.
    startup_timeout_s: float = 30.0
    #: merge="rtc": ask for a chunk when at most this many actions are buffered (None: LeRobot's 30).
    rtc_queue_threshold: int | None = None
    #: See :class:`ControlPriority`; BENCHMARKS.md ("under contention") has the measurements.
    control_priority: ControlPriority = ControlPriority.AUTO

    def __post_init__(self) -> None:
        if self.merge is not None:
            object.__setattr__(self, "merge", _choice(Merge, self.merge, "merge (INFERENCE_MERGE)"))
        object.__setattr__(self, "fallback", _choice(Fallback, self.fallback, "fallback (INFERENCE_FALLBACK)"))
        object.__setattr__(
            self,
            "control_priority",
            _choice(ControlPriority, self.control_priority, "control_priority (INFERENCE_CONTROL_PRIORITY)"),
        )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("merge", "fallback", "control_priority") or (f.name == "buffer_time_s" and value is None):
                continue
            if f.name == "rtc_queue_threshold":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                    raise BadInputError(
                        f"rtc_queue_threshold ({ENV[f.name]}) must be a whole number of actions >= 0, got {value!r}"
                    )
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
            if name in ("merge", "fallback", "control_priority"):
                values[name] = text.lower()
                continue
            try:
                values[name] = float(text)
                if name == "rtc_queue_threshold" and values[name].is_integer():
                    values[name] = int(values[name])
            except ValueError:
                raise BadInputError(f"{var}={text!r}: give a number (seconds, or Hz for INFERENCE_FPS)") from None
        return cls(**values)


#: Environment variable of each setting (``RealtimeSettings.from_env``, ``RealtimeClient.from_env``).
ENV = {f: f"INFERENCE_{f.upper()}" for f in RealtimeSettings.__dataclass_fields__}
