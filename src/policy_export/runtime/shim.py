"""LeRobot's ``select_action`` state, rebuilt outside the model for a batch of robots.

The exported core is stateless (observation -> action chunk). LeRobot's ``ACTPolicy`` keeps
the state that turns chunks into one action per control step: an action queue
(``n_action_steps``) or ACT's temporal ensembling. These classes reproduce both, numpy only,
so the robot's host needs no torch. Each robot of a batch has its own state, so one robot
can start a new episode while the others carry on (LeRobot can only reset the whole batch).

Both shims expose ``step(predict, batch_size)``: ``predict(rows)`` must return the action
chunks ``[len(rows), chunk_size, action_dim]`` for the robots listed in ``rows``. The shim
calls it only when it needs chunks, and only for the robots that need one, which is what
makes queue mode cheap (one core call every ``n_action_steps`` steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from policy_export.errors import BadInputError
from policy_export.spec import PolicySpec

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ShimSettings:
    """How chunks become actions; read from the artifact or server, never retyped by the user."""

    chunk_size: int
    n_action_steps: int
    temporal_ensemble_coeff: float | None = None

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise BadInputError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise BadInputError(
                f"n_action_steps must be in [1, chunk_size={self.chunk_size}], got {self.n_action_steps}"
            )
        if self.temporal_ensemble_coeff is not None and self.n_action_steps != 1:
            # Same rule as LeRobot's ACTConfig: ensembling queries the policy at every step.
            raise BadInputError(
                f"temporal ensembling needs n_action_steps == 1, got {self.n_action_steps}; "
                "set n_action_steps=1 or temporal_ensemble_coeff=None"
            )

    @property
    def mode(self) -> str:
        return "queue" if self.temporal_ensemble_coeff is None else "ensemble"

    @classmethod
    def from_spec(cls, spec: PolicySpec) -> ShimSettings:
        """From the artifact's (or checkpoint's) spec: the settings the policy was trained with."""
        return cls(spec.chunk_size, spec.n_action_steps, spec.host.ensemble_coeff)

    def make(self) -> ActionQueue | TemporalEnsembler:
        """The shim LeRobot's ``select_action`` would use for these settings."""
        if self.temporal_ensemble_coeff is None:
            return ActionQueue(self.chunk_size, self.n_action_steps)
        return TemporalEnsembler(self.temporal_ensemble_coeff, self.chunk_size)


def ensemble_weights(coeff: float, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """ACT's ensembling weights ``w_i = exp(-coeff * i)`` and their cumulative sum, float32,
    computed as torch computes them (the product ``-coeff * i`` in float32, the cumulative sum
    accumulated in float64) so that fed the same chunks the shim matches LeRobot to the bit."""
    arg = np.float32(-coeff) * np.arange(chunk_size, dtype=np.float32)
    weights = np.exp(arg.astype(np.float64)).astype(np.float32)
    return weights, np.cumsum(weights.astype(np.float64)).astype(np.float32)


def ensemble_fold(
    ens: np.ndarray, count: np.ndarray, new: np.ndarray, weights: np.ndarray, weights_cumsum: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fold one more prediction ``new`` into the running averages ``ens`` (``count`` predictions each).

    ``ens = (ens * W[n-1] + new * w[n]) / W[n]``, then ``n = min(n + 1, chunk_size)``: the same
    operations in the same order as ``ACTTemporalEnsembler.update``, float32 throughout. Element-wise
    float32 arithmetic does not depend on the array's shape, so every caller (one robot aligned by
    control step, or a batch) gets LeRobot's bits.
    """
    out = ens * weights_cumsum[count - 1]
    out += new * weights[count]
    out /= weights_cumsum[count]
    return out, np.minimum(count + 1, len(weights))


class _BatchState:
    """Batch size bookkeeping shared by both shims."""

    batch_size: int | None = None

    def _check_batch(self, batch_size: int) -> None:
        if self.batch_size is None:
            self._allocate(batch_size)
        elif batch_size != self.batch_size:
            raise BadInputError(
                f"observation batch size {batch_size} != {self.batch_size} robots of the running episode; "
                "call reset() (all robots) before changing the number of robots"
            )

    def _allocate(self, batch_size: int) -> None:
        raise NotImplementedError

    def _check_chunks(self, chunks: np.ndarray, rows: int, chunk_size: int) -> np.ndarray:
        chunks = np.asarray(chunks)
        if chunks.ndim != 3 or chunks.shape[0] != rows or chunks.shape[1] != chunk_size:
            raise BadInputError(
                f"action chunk shape {tuple(chunks.shape)} != expected [{rows}, {chunk_size}, action_dim]; "
                "the model does not match the shim settings"
            )
        return chunks.astype(np.float32, copy=False)

    def _robots(self, robot: int | None) -> None:
        if robot is not None and self.batch_size is not None and not 0 <= robot < self.batch_size:
            raise BadInputError(f"reset(robot={robot}): robot index out of range for a batch of {self.batch_size}")


class ActionQueue(_BatchState):
    """``n_action_steps`` queue of ``ACTPolicy.select_action``, one queue per robot.

    A robot whose queue is empty gets the first ``n_action_steps`` actions of a fresh chunk,
    then one action is popped per step: exactly LeRobot's ``deque(maxlen=n_action_steps)``.
    While every robot is at the same point of its queue (no per-robot reset this episode) a
    step is one slice and two integer updates; robots out of step cost one gather.
    """

    def __init__(self, chunk_size: int, n_action_steps: int) -> None:
        ShimSettings(chunk_size, n_action_steps)  # validates
        self.chunk_size = chunk_size
        self.n_action_steps = n_action_steps
        self.batch_size: int | None = None
        self._actions: np.ndarray | None = None  # [B, n_action_steps, A]
        self._next = np.zeros(0, np.int64)  # per robot: index of the next action; n_action_steps = empty
        self._sync: int | None = None  # the common index while all robots are in step (then _next is stale)
        self._left = 0  # actions left in the shortest queue
        self._all = np.zeros(0, np.int64)

    def _allocate(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._actions = None
        self._next = np.full(batch_size, self.n_action_steps, np.int64)
        self._sync, self._left = self.n_action_steps, 0
        self._all = np.arange(batch_size)

    def _materialize(self) -> None:
        if self._sync is not None:
            self._next[:] = self._sync
            self._sync = None

    def pending(self, batch_size: int) -> np.ndarray:
        """Robots (row indices) whose queue is empty and so need a chunk this step."""
        self._check_batch(batch_size)
        if self._left > 0:
            return self._all[:0]
        if self._sync is not None:
            return self._all
        return np.flatnonzero(self._next >= self.n_action_steps)

    def push(self, chunks: np.ndarray, rows: np.ndarray) -> None:
        """Refill the queues of ``rows`` from their chunks ``[len(rows), chunk_size, A]``."""
        assert self.batch_size is not None, "pending() first"
        chunks = self._check_chunks(chunks, len(rows), self.chunk_size)
        if self._actions is None or self._actions.shape[2] != chunks.shape[2]:
            self._actions = np.zeros((self.batch_size, self.n_action_steps, chunks.shape[2]), np.float32)
        if rows is self._all or np.array_equal(rows, self._all):
            self._actions[...] = chunks[:, : self.n_action_steps]
            self._sync = 0
        else:
            self._materialize()
            self._actions[rows] = chunks[:, : self.n_action_steps]
            self._next[rows] = 0
        self._left = self.n_action_steps - (self._sync if self._sync is not None else int(self._next.max()))

    def pop(self) -> np.ndarray:
        """Next action of every robot, ``[B, A]`` (a new array)."""
        if self._actions is None or self._left < 1:
            raise BadInputError("action queue is empty; call step() (or push()) before pop()")
        if self._sync is not None:
            out = self._actions[:, self._sync].copy()
            self._sync += 1
        else:
            out = self._actions[self._all, self._next]
            self._next += 1
        self._left -= 1
        return out

    def step(self, predict: Predict, batch_size: int) -> np.ndarray:
        rows = self.pending(batch_size)
        if rows.size:
            self.push(predict(rows), rows)
        return self.pop()

    def reset(self, robot: int | None = None) -> None:
        """New episode for every robot (``robot=None``; the batch size may then change) or one."""
        self._robots(robot)
        if robot is None:
            self.batch_size, self._actions, self._sync, self._left = None, None, None, 0
            self._next = np.zeros(0, np.int64)
        elif self.batch_size is not None:
            self._materialize()
            self._next[robot] = self.n_action_steps
            self._left = 0


class TemporalEnsembler(_BatchState):
    """LeRobot's ``ACTTemporalEnsembler`` with one running average per robot.

    Weights ``w_i = exp(-coeff * i)`` (``i = 0`` the oldest prediction) and the online
    update ``ens = (ens * W[n-1] + new * w[n]) / W[n]`` with ``W = cumsum(w)``, in LeRobot's
    operation order and in float32. The weights are computed as torch computes them (the
    product ``-coeff * i`` in float32, the cumulative sum accumulated in float64) so that,
    fed the same chunks, this matches LeRobot to the last bit except where torch's vectorised
    ``exp`` is one ulp off the correctly rounded one.

    The per-slot prediction counts are shared by the whole batch, as in LeRobot, until one
    robot starts a new episode on its own; from then on each robot has its own counts.
    """

    def __init__(self, temporal_ensemble_coeff: float, chunk_size: int) -> None:
        ShimSettings(chunk_size, 1, temporal_ensemble_coeff)  # validates
        self.coeff = float(temporal_ensemble_coeff)
        self.chunk_size = chunk_size
        self.weights, self.weights_cumsum = ensemble_weights(self.coeff, chunk_size)
        self.batch_size: int | None = None
        self._ens: np.ndarray | None = None  # [B, chunk_size - 1, A] after the pop
        self._count: np.ndarray = np.ones((0, 1), np.int64)  # [chunk_size - 1, 1] shared, or [B, chunk_size - 1, 1]
        self._fresh = np.zeros(0, bool)  # robots starting an episode: next chunk initialises them

    def _allocate(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._ens = None
        self._fresh = np.ones(batch_size, bool)

    def pending(self, batch_size: int) -> np.ndarray:
        """Every robot, every step: ensembling queries the core at each control step."""
        self._check_batch(batch_size)
        return np.arange(batch_size)

    def update(self, chunks: np.ndarray) -> np.ndarray:
        """Fold in the chunks of every robot ``[B, chunk_size, A]``; return each robot's action ``[B, A]``."""
        if self.batch_size is None:
            self._allocate(len(chunks))
        chunks = self._check_chunks(chunks, self.batch_size or 0, self.chunk_size)
        if self._ens is None or self._ens.shape[2] != chunks.shape[2]:
            self._fresh[:] = True
        fresh = self._fresh.any()
        count: np.ndarray
        if fresh and self._fresh.all():
            full = chunks.copy()
            count = np.ones((self.chunk_size, 1), np.int64)
        else:
            assert self._ens is not None  # every robot fresh otherwise
            ens, count = ensemble_fold(self._ens, self._count, chunks[:, :-1], self.weights, self.weights_cumsum)
            full = np.concatenate([ens, chunks[:, -1:]], axis=1)
            count = np.concatenate([count, np.ones_like(count[..., -1:, :])], axis=-2)
            if fresh:
                if count.ndim == 2:  # robots part ways: from now on each keeps its own counts
                    count = np.broadcast_to(count, (self.batch_size or 0, *count.shape)).copy()
                full[self._fresh] = chunks[self._fresh]
                count[self._fresh] = 1
        self._fresh[:] = False
        action, self._ens, self._count = full[:, 0].copy(), full[:, 1:], count[..., 1:, :]
        return action

    def step(self, predict: Predict, batch_size: int) -> np.ndarray:
        return self.update(predict(self.pending(batch_size)))

    def reset(self, robot: int | None = None) -> None:
        """New episode for every robot (``robot=None``; the batch size may then change) or one."""
        self._robots(robot)
        if robot is None:
            self.batch_size, self._ens = None, None
            self._fresh = np.zeros(0, bool)
        elif self.batch_size is not None:
            self._fresh[robot] = True
