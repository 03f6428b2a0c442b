"""Observation history, for cores that take one (Diffusion Policy: ``HostDecl.history``).

LeRobot's ``DiffusionPolicy.select_action`` keeps the last ``n_obs_steps`` observations
(``populate_queues``: an empty history is filled with copies of the first observation). The
exported core is stateless, so the history lives on the robot's host, numpy only and per
robot: one robot may start a new episode (``reset(robot=i)``) while the others carry on, and
one served model can batch many robots because no robot's state is on the server.

A part of :class:`~policy_export.runtime.host.Host`, which owns it; this module imports
nothing of the host.
"""

from __future__ import annotations

import numpy as np

from policy_export.errors import BadInputError


class ObservationHistory:
    """The last ``n_obs_steps`` observations of every robot, as ``[B, n_obs_steps, ...]`` arrays.

    The arrays are replaced, never written in place, so a feed built later on another thread
    (``RealtimeClient``'s worker) sees the history of its own step.
    """

    def __init__(self, n_obs_steps: int) -> None:
        if n_obs_steps < 1:
            raise BadInputError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        self.n_obs_steps = n_obs_steps
        self.batch_size: int | None = None
        self._history: dict[str, np.ndarray] = {}  # name -> [B, n_obs_steps, ...]
        self._fresh = np.zeros(0, bool)  # robots whose next observation fills their whole history

    def observe(self, step: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Append one step's observation of every robot (a fresh robot's fills its history)."""
        batch = len(next(iter(step.values())))
        if self.batch_size is None:
            self.batch_size, self._history = batch, {}
            self._fresh = np.ones(batch, bool)
        elif batch != self.batch_size:
            raise BadInputError(
                f"observation batch size {batch} != {self.batch_size} robots of the running episode; "
                "call reset() (all robots) before changing the number of robots"
            )
        n = self.n_obs_steps
        history = {}
        for name, x in step.items():
            x = np.asarray(x)
            old = self._history.get(name)
            if old is None or old.shape[2:] != x.shape[1:] or old.dtype != x.dtype:
                old = np.repeat(x[:, None], n, axis=1)  # populate_queues: copies of the first observation
            # deque(maxlen=n).append: the oldest drops out, the newest is last.
            hist = np.concatenate([old[:, 1:], x[:, None]], axis=1)
            if self._fresh.any():
                hist[self._fresh] = x[self._fresh][:, None]
            history[name] = hist
        self._history = history
        self._fresh[:] = False
        return history

    def first(self, step: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The history of an episode's first step (copies of it), without recording it."""
        return {k: np.repeat(np.asarray(v)[:, None], self.n_obs_steps, axis=1) for k, v in step.items()}

    def reset(self, robot: int | None = None) -> None:
        if robot is None:
            self.batch_size, self._history, self._fresh = None, {}, np.zeros(0, bool)
        elif self.batch_size is not None:
            if not 0 <= robot < self.batch_size:
                raise BadInputError(f"reset(robot={robot}): robot index out of range for a batch of {self.batch_size}")
            self._fresh[robot] = True
