"""The action buffers: how a chunk, stamped with the control step of its observation, joins the
actions already buffered (``replace``: the newest chunk wins; ``ensemble``: ACT's temporal
ensembling, the shim's own arithmetic), and :class:`Tick`, what one ``select_action`` returned.

Apart from the client because this is the arithmetic that decides which action runs at step
``t``; it holds no threads and no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy_export.runtime.realtime.settings import Fallback, State
from policy_export.runtime.shim import ensemble_fold, ensemble_weights


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

    def leftover(self, t: int) -> np.ndarray | None:
        """The buffered actions for steps ``t ..`` (RTC's unexecuted rest, LeRobot's ``get_left_over``);
        None before the first chunk of the episode."""
        if self.actions is None:
            return None
        return self.actions[max(0, t - self.start) :].copy()


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
