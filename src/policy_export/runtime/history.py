"""Observation history and host-drawn noise, for cores that take both (Diffusion Policy).

LeRobot's ``DiffusionPolicy.select_action`` keeps the last ``n_obs_steps`` observations
(``populate_queues``: an empty history is filled with copies of the first observation) and
an action queue of ``n_action_steps``; each chunk prediction draws its noise. The exported
core is stateless, so all of that lives on the robot's host, numpy only and per robot: one
robot may start a new episode (``reset(robot=i)``) while the others carry on, and one served
model can batch many robots because no robot's state is on the server.

:class:`HistoryHost` is this family's :class:`~policy_export.runtime.host.Host`: it records
every control step's observation and builds the core's inputs (history + fresh noise) for the
robots whose queue ran dry; the queue is the same :class:`~policy_export.runtime.shim.ActionQueue`
ACT uses. Noise comes from a seeded numpy generator (``seed=``, reproducible runs) or from the
caller (``noise_source(rows) -> {name: array}``), one fresh draw per chunk prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from policy_export.errors import BadInputError
from policy_export.runtime.host import FeedFn, Host
from policy_export.runtime.shim import ActionQueue

if TYPE_CHECKING:
    from policy_export.runtime.observation import Prepared
    from policy_export.spec import ArtifactMetadata, PolicySpec

NoiseSource = Callable[[int], dict[str, np.ndarray]]


@dataclass(frozen=True)
class HistorySettings:
    """History length, queue length and the noise inputs; read from the artifact, never retyped."""

    n_obs_steps: int
    n_action_steps: int
    #: (input name, shape without batch) of each standard-normal input the core takes.
    noise_inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.n_obs_steps < 1 or self.n_action_steps < 1:
            raise BadInputError(
                f"n_obs_steps and n_action_steps must be >= 1, got {self.n_obs_steps}, {self.n_action_steps}"
            )

    @property
    def mode(self) -> str:
        return "queue"

    @property
    def chunk_size(self) -> int:
        """The core returns exactly the actions the queue takes."""
        return self.n_action_steps

    @property
    def temporal_ensemble_coeff(self) -> None:
        return None

    @classmethod
    def from_spec(cls, spec: PolicySpec) -> HistorySettings:
        if spec.n_obs_steps is None:
            raise BadInputError(f"a {spec.policy_type} model takes no observation history")
        return cls(spec.n_obs_steps, spec.n_action_steps, tuple((n.name, tuple(n.shape)) for n in spec.noise_inputs))

    def make(self) -> ActionQueue:
        """The action queue (the history is the host's)."""
        return ActionQueue(self.n_action_steps, self.n_action_steps)


class HistoryHost(Host):
    """Per-robot observation history (``populate_queues`` semantics) plus the noise draws.

    :meth:`feed` runs once per control step: it appends the step's observation (every step,
    as LeRobot queues every observation) and returns a builder that gives the history
    ``[rows, n_obs_steps, ...]`` of the robots asked for, plus fresh noise for them. The
    history arrays are replaced, never written in place, so a builder run later on another
    thread (``RealtimeClient``'s worker) sees the history of its own step.
    """

    settings: HistorySettings  # type: ignore[assignment]  # the history host's own settings type

    def __init__(
        self,
        metadata: ArtifactMetadata,
        settings: HistorySettings,
        *,
        seed: int | None = None,
        noise_source: NoiseSource | None = None,
    ) -> None:
        self.metadata = metadata
        self.settings = settings
        self.rng = np.random.default_rng(seed)
        self.noise_source = noise_source
        self.batch_size: int | None = None
        self._history: dict[str, np.ndarray] = {}  # name -> [B, n_obs_steps, ...]
        self._fresh = np.zeros(0, bool)  # robots whose next observation fills their whole history

    def observe(self, step: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Append one step's observation of every robot (a fresh robot's fills its history)."""
        batch = len(step["state"])
        if self.batch_size is None:
            self.batch_size, self._history = batch, {}
            self._fresh = np.ones(batch, bool)
        elif batch != self.batch_size:
            raise BadInputError(
                f"observation batch size {batch} != {self.batch_size} robots of the running episode; "
                "call reset() (all robots) before changing the number of robots"
            )
        n = self.settings.n_obs_steps
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

    def draw_noise(self, rows: int) -> dict[str, np.ndarray]:
        """Fresh standard-normal inputs for ``rows`` robots (from ``noise_source`` when given)."""
        if self.noise_source is not None:
            return self._checked_noise(self.noise_source(rows), rows)
        return {
            name: self.rng.standard_normal((rows, *shape), dtype=np.float32)
            for name, shape in self.settings.noise_inputs
        }

    def _checked_noise(self, noise: object, rows: int) -> dict[str, np.ndarray]:
        """A caller's draw, refused unless it is what the core takes: the shape, numbers, and finite.

        NaN or inf in the initial sample runs through every denoising step into the actions
        (all NaN, or a plausible chunk from a wrong sample), so it is never passed on, whatever
        ``check_inputs`` says: unlike a sensor reading, noise is never legitimately NaN.
        """
        if not isinstance(noise, Mapping):
            raise BadInputError(
                f"noise_source returned a {type(noise).__name__}; it must return a dict of arrays "
                f"({', '.join(n for n, _ in self.settings.noise_inputs)})"
            )
        out = {}
        for name, shape in self.settings.noise_inputs:
            got = tuple(np.shape(noise[name])) if name in noise else ()
            if got != (rows, *shape):
                raise BadInputError(f"noise_source gave {name} of shape {list(got)}, expected {[rows, *shape]}")
            try:
                value = np.asarray(noise[name], np.float32)
            except (TypeError, ValueError) as exc:
                raise BadInputError(f"noise_source gave {name} that is not numbers ({exc})") from None
            if not np.isfinite(value).all():
                bad = np.argwhere(~np.isfinite(value))[0].tolist()
                raise BadInputError(
                    f"noise_source gave {name} with NaN or inf at {bad}; it must draw finite standard-normal "
                    "values (e.g. numpy's default_rng().standard_normal)"
                )
            out[name] = value
        return out

    def builder(self, history: dict[str, np.ndarray]) -> FeedFn:
        batch = len(history["state"])

        def build(rows: np.ndarray | None) -> dict[str, np.ndarray]:
            whole = rows is None or len(rows) == batch
            feed = {k: (h if whole else h[rows]) for k, h in history.items()}
            feed.update(self.draw_noise(batch if rows is None or whole else len(rows)))
            return feed

        return build

    def feed(self, prep: Prepared) -> FeedFn:
        return self.builder(self.observe(prep.feed()))

    def single(self, prep: Prepared) -> dict[str, np.ndarray]:
        """One chunk for this observation as an episode's first step (history = copies of it)."""
        n = self.settings.n_obs_steps
        feed = {k: np.repeat(np.asarray(v)[:, None], n, axis=1) for k, v in prep.feed().items()}
        feed.update(self.draw_noise(prep.batch_size))
        return feed

    def reset(self, robot: int | None = None) -> None:
        if robot is None:
            self.batch_size, self._history, self._fresh = None, {}, np.zeros(0, bool)
        elif self.batch_size is not None:
            if not 0 <= robot < self.batch_size:
                raise BadInputError(f"reset(robot={robot}): robot index out of range for a batch of {self.batch_size}")
            self._fresh[robot] = True
