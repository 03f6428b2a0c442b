"""Real-time chunking (RTC) on the robot's host: what leftover and delay the core is sent, and
how a guided chunk replaces the queue. numpy only.

The guidance itself runs inside the exported core (inputs ``rtc_prev_chunk`` float32
``[B, chunk_size, action_dim]`` in robot units, ``rtc_prev_len`` int64 ``[B]``, ``rtc_delay``
int64 ``[B]``); the host keeps LeRobot's RTC bookkeeping, read from LeRobot 0.6.1's
``policies/rtc/action_queue.py`` (``ActionQueue`` with ``RTCConfig.enabled``) and
``rollout/inference/rtc.py`` (``RTCInferenceEngine._rtc_loop``):

- a chunk is asked for when the queue holds ``<= queue_threshold`` actions (``queue_threshold``,
  LeRobot's default 30), one request at a time;
- it is sent the *unexecuted rest* of the queue (``ActionQueue.get_left_over``: the actions from
  the one this tick would run on), left-aligned and zero-padded, with ``rtc_prev_len`` its
  real length (0: no queue yet, LeRobot's ``prev_chunk_left_over=None``), and the expected
  delay in control steps (LeRobot: ``ceil(max latency seen / dt)``, 0 before any chunk);
- the new chunk *replaces* the queue, its first ``d`` actions dropped, ``d`` the control steps
  that really passed while it was computed (``ActionQueue._replace_actions_queue``).

Two differences, both where LeRobot's engine pads for its own reasons: the engine pads or cuts
the leftover to ``execution_horizon`` rows *in model space* (``_normalize_prev_actions_length``,
"for stable compiled inference"), so a leftover shorter than the horizon is guided towards the
normalized zero (the dataset's mean action) on the missing rows, and an empty queue is guided
towards it on all of them. Here the core is told the real length and guides on real rows only,
which is what ``RTCProcessor.denoise_step`` itself does with a short leftover ("it doesn't make
sense to use long execution horizon because there is nothing to merge"). With a leftover of at
least ``execution_horizon`` rows (every request of a stream whose threshold exceeds
the delay plus the horizon) both are the same: rows past the horizon have weight 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policy_export.spec import ArtifactMetadata

import numpy as np

from policy_export.errors import BadInputError

#: LeRobot rollout's ``RTCInferenceConfig.queue_threshold``: ask for a chunk with this many actions left.
DEFAULT_QUEUE_THRESHOLD = 30
#: The core's RTC input names (the SmolVLA family's signature).
PREV_CHUNK, PREV_LEN, DELAY = "rtc_prev_chunk", "rtc_prev_len", "rtc_delay"
RTC_INPUTS = (PREV_CHUNK, PREV_LEN, DELAY)

#: ``predict(rows, extra)``: chunks for the robots in ``rows``, with ``extra`` (the RTC inputs) added to the core's inputs.
RTCPredict = Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class RTCSettings:
    """The core's chunk geometry and the queue's request rule (read from the model, never retyped)."""

    chunk_size: int
    action_dim: int
    #: Rows of the leftover the core's guidance weights (the checkpoint's ``rtc_config.execution_horizon``).
    execution_horizon: int
    #: Ask for a chunk when at most this many actions are left (LeRobot's ``queue_threshold``).
    queue_threshold: int = DEFAULT_QUEUE_THRESHOLD

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.action_dim < 1:
            raise BadInputError(f"RTC needs chunk_size and action_dim >= 1, got {self.chunk_size}, {self.action_dim}")
        if not 1 <= self.execution_horizon <= self.chunk_size:
            raise BadInputError(
                f"rtc execution_horizon {self.execution_horizon} must be in [1, chunk_size={self.chunk_size}]"
            )
        if (
            isinstance(self.queue_threshold, bool)
            or not isinstance(self.queue_threshold, int)
            or self.queue_threshold < 0
        ):
            raise BadInputError(
                f"rtc_queue_threshold must be a whole number of actions >= 0, got {self.queue_threshold!r}"
            )


def rtc_settings(metadata: ArtifactMetadata, queue_threshold: int | None = None) -> RTCSettings:
    """The model's RTC declaration (``spec.host.rtc``: ``execution_horizon``) with the caller's threshold."""
    from policy_export.spec import Role

    spec = metadata.spec
    decl = spec.host.rtc
    roles = {t.name: t.role for t in spec.signature.inputs}
    expected = {PREV_CHUNK: Role.RTC_PREV_CHUNK, PREV_LEN: Role.RTC_PREV_LEN, DELAY: Role.RTC_DELAY}
    if decl and any(roles.get(name) is not role for name, role in expected.items()):
        raise BadInputError(
            f"the model declares RTC but its RTC inputs are not named {', '.join(RTC_INPUTS)}; "
            "this runtime sends those names: upgrade policy-export on the robot's host"
        )
    if not decl:
        raise BadInputError(
            f"merge='rtc' (rtc=True) needs a model whose core takes RTC inputs ({', '.join(RTC_INPUTS)}); "
            f"this {spec.policy_type} model takes none: use merge='replace'"
        )
    try:
        horizon = int(decl["execution_horizon"])
    except (KeyError, TypeError, ValueError):
        raise BadInputError("the model's RTC metadata has no execution_horizon; re-export the artifact") from None
    threshold = DEFAULT_QUEUE_THRESHOLD if queue_threshold is None else queue_threshold
    return RTCSettings(spec.chunk_size, spec.action_dim, horizon, threshold)


def check_delay(delay: int, chunk_size: int, what: str = "inference_delay") -> int:
    """A delay in control steps must leave some of the chunk to run: ``0 <= delay < chunk_size``."""
    if isinstance(delay, bool) or not isinstance(delay, int | np.integer):
        raise BadInputError(f"{what} must be a whole number of control steps, got {delay!r}")
    if not 0 <= int(delay) < chunk_size:
        raise BadInputError(
            f"{what} {int(delay)} is outside [0, chunk_size={chunk_size}): a chunk delayed by {int(delay)} control "
            "steps would be entirely in the past when it arrives"
        )
    return int(delay)


def rtc_feed(
    leftovers: Sequence[np.ndarray | None], delays: Sequence[int], chunk_size: int, action_dim: int
) -> dict[str, np.ndarray]:
    """The core's RTC inputs for ``len(leftovers)`` robots.

    ``leftovers[i]``: robot ``i``'s unexecuted actions ``[n, action_dim]`` in robot units (None or
    ``n == 0``: no guidance), at most ``chunk_size`` rows; ``delays[i]``: control steps in ``[0, chunk_size)``.
    """
    batch = len(leftovers)
    if len(delays) != batch:
        raise BadInputError(f"{len(delays)} RTC delays for {batch} robots")
    prev = np.zeros((batch, chunk_size, action_dim), np.float32)
    length = np.zeros(batch, np.int64)
    delay = np.zeros(batch, np.int64)
    for i, (rows, d) in enumerate(zip(leftovers, delays, strict=True)):
        delay[i] = check_delay(d, chunk_size)
        if rows is None:
            continue
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != action_dim or rows.shape[0] > chunk_size:
            raise BadInputError(
                f"RTC leftover of robot {i} has shape {list(rows.shape)}; expected [n, {action_dim}] with "
                f"n <= chunk_size {chunk_size} (the unexecuted rest of the previous chunk, robot units)"
            )
        if not np.isfinite(rows).all():
            raise BadInputError(f"RTC leftover of robot {i} holds NaN or inf")
        prev[i, : len(rows)] = rows
        length[i] = len(rows)
    return {PREV_CHUNK: prev, PREV_LEN: length, DELAY: delay}


def no_guidance(batch: int, chunk_size: int, action_dim: int) -> dict[str, np.ndarray]:
    """RTC inputs that switch the guidance off (LeRobot's ``prev_chunk_left_over=None``)."""
    return rtc_feed([None] * batch, [0] * batch, chunk_size, action_dim)


def leftover_batch(
    prev_chunk_left_over: object, inference_delay: object, batch: int, chunk_size: int, action_dim: int
) -> dict[str, np.ndarray]:
    """A caller's leftover (``[n, A]`` for every robot or ``[B, n, A]``, robot units) and delay (an int
    or one per robot) as the core's RTC inputs; wrong shapes are one line."""
    try:
        rows = np.asarray(prev_chunk_left_over, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadInputError(
            f"prev_chunk_left_over is not an array of numbers ({type(prev_chunk_left_over).__name__})"
        ) from None
    shape = list(rows.shape)
    if rows.ndim == 2:
        rows = np.broadcast_to(rows, (batch, *rows.shape))
    if rows.ndim != 3 or rows.shape[0] != batch:
        raise BadInputError(
            f"prev_chunk_left_over has shape {shape}; expected [n, {action_dim}] "
            f"or [{batch}, n, {action_dim}] with n <= chunk_size {chunk_size}"
        )
    delays = np.asarray(inference_delay)
    if delays.ndim == 0:
        delays = np.full(batch, delays)
    if delays.shape != (batch,) or not np.issubdtype(delays.dtype, np.integer):
        raise BadInputError(
            f"inference_delay must be a whole number of control steps (or one per robot, {batch}), got {inference_delay!r}"
        )
    return rtc_feed(list(rows), [int(d) for d in delays], chunk_size, action_dim)


class RTCQueue:
    """LeRobot's RTC ``ActionQueue`` for a batch of robots, driven synchronously (zero latency).

    ``step(predict, batch_size)``: every robot whose queue holds ``<= queue_threshold`` actions
    gets a chunk computed now from this step's observation, guided by its unexecuted leftover
    (delay 0: nothing ran while it was computed), which replaces its queue; then every robot
    pops one action. This is :class:`RTCInferenceEngine` at zero latency, per robot.
    """

    def __init__(self, settings: RTCSettings) -> None:
        self.settings = settings
        self.batch_size: int | None = None
        self._actions = np.zeros((0, settings.chunk_size, settings.action_dim), np.float32)
        self._next = np.zeros(0, np.int64)  # per robot: index of its next action
        self._len = np.zeros(0, np.int64)  # per robot: actions in its queue (0: no queue yet)

    def _check_batch(self, batch_size: int) -> None:
        if self.batch_size is None:
            s = self.settings
            self.batch_size = batch_size
            self._actions = np.zeros((batch_size, s.chunk_size, s.action_dim), np.float32)
            self._next = np.zeros(batch_size, np.int64)
            self._len = np.zeros(batch_size, np.int64)
        elif batch_size != self.batch_size:
            raise BadInputError(
                f"observation batch size {batch_size} != {self.batch_size} robots of the running episode; "
                "call reset() (all robots) before changing the number of robots"
            )

    def remaining(self) -> np.ndarray:
        """Actions left in each robot's queue (LeRobot's ``qsize``)."""
        return self._len - self._next

    def pending(self, batch_size: int) -> np.ndarray:
        """Robots at or below the threshold (they ask for a chunk this step)."""
        self._check_batch(batch_size)
        return np.flatnonzero(self.remaining() <= self.settings.queue_threshold)

    def leftover(self, robot: int) -> np.ndarray | None:
        """Robot ``robot``'s unexecuted actions (``get_left_over``); None before its first chunk."""
        if self._len[robot] == 0:
            return None
        return self._actions[robot, self._next[robot] : self._len[robot]].copy()

    def push(self, chunks: np.ndarray, rows: np.ndarray, delays: Sequence[int] | None = None) -> None:
        """Replace the queues of ``rows`` by their chunks minus the first ``delays[i]`` actions."""
        s = self.settings
        chunks = np.asarray(chunks, np.float32)
        if chunks.shape != (len(rows), s.chunk_size, s.action_dim):
            raise BadInputError(
                f"action chunk shape {list(chunks.shape)} != expected [{len(rows)}, {s.chunk_size}, {s.action_dim}]; "
                "the model does not match the RTC settings"
            )
        for i, r in enumerate(rows):
            skip = 0 if delays is None else max(0, min(int(delays[i]), s.chunk_size))
            n = s.chunk_size - skip
            self._actions[r, :n] = chunks[i, skip:]
            self._next[r], self._len[r] = 0, n

    def pop(self) -> np.ndarray:
        """Every robot's next action ``[B, A]``."""
        if self.batch_size is None or (self.remaining() < 1).any():
            raise BadInputError("RTC queue is empty; call step() (or push()) before pop()")
        out = self._actions[np.arange(self.batch_size), self._next].copy()
        self._next += 1
        return out

    def step(self, predict: RTCPredict, batch_size: int) -> np.ndarray:
        rows = self.pending(batch_size)
        if rows.size:
            s = self.settings
            extra = rtc_feed([self.leftover(int(r)) for r in rows], [0] * len(rows), s.chunk_size, s.action_dim)
            self.push(predict(rows, extra), rows)
        return self.pop()

    def reset(self, robot: int | None = None) -> None:
        """New episode for every robot (the batch size may then change) or one: its queue is emptied."""
        if robot is None:
            self.batch_size = None
            return
        if self.batch_size is not None:
            if not 0 <= robot < self.batch_size:
                raise BadInputError(f"reset(robot={robot}): robot index out of range for a batch of {self.batch_size}")
            self._next[robot] = self._len[robot] = 0
