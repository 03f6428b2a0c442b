"""The host side of a model, composed from its declaration (``spec.signature`` roles and ``spec.host``).

Around the stateless core the host builds the core's inputs for a control step and turns
chunks into actions. Nothing here asks which family a model is: each input's :class:`Role`
says who provides it, and :class:`~policy_export.spec.HostDecl` says what the host keeps:

- observation roles (state, cameras) come from the robot's observation, through an
  :class:`~policy_export.runtime.history.ObservationHistory` when the host declares one;
- drawn roles (noise, per-step noise) are standard-normal draws, one per chunk prediction,
  from a seeded numpy generator (``seed=``) or the caller's ``noise_source(rows)``;
- language roles (task tokens and mask) come from the task string of the control step, tokenized
  on the caller's thread by the host's :class:`~policy_export.runtime.tokenizer.TaskTokenizer`
  (``HostDecl.tokenizer``), cached per task;
- RTC inputs are "no guidance" (an empty leftover) unless a caller provides them;
- chunks become actions through the shim of :class:`~policy_export.runtime.shim.ShimSettings`
  (an action queue, or temporal ensembling when ``HostDecl.ensemble_coeff`` is set).

A role no provider knows (``PROVIDERS``) is refused when the host is built, in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from policy_export.errors import BadInputError
from policy_export.runtime.history import ObservationHistory
from policy_export.runtime.observation import Prepared
from policy_export.runtime.shim import ActionQueue, ShimSettings, TemporalEnsembler
from policy_export.runtime.tokenizer import TaskTokenizer
from policy_export.spec import OBSERVATION_ROLES, ArtifactMetadata, Role, TensorDecl

#: Builds the core's named inputs for all robots (``None``) or the listed rows. It may run
#: later and on another thread (``RealtimeClient``'s worker), so it must not read shared state.
FeedFn = Callable[[np.ndarray | None], dict[str, np.ndarray]]
#: A caller's noise: ``noise_source(rows) -> {input name: array [rows, ...]}``.
NoiseSource = Callable[[int], dict[str, np.ndarray]]
#: Makes host inputs for ``rows`` robots.
Provider = Callable[[int], dict[str, np.ndarray]]


class NoiseDraws:
    """Standard-normal inputs (``Role.NOISE`` / ``Role.STEP_NOISE``), a fresh draw per chunk prediction:
    from a numpy generator seeded with the host's ``seed``, or from the host's ``noise_source``
    (read at every draw, so a caller may set it on a running client)."""

    def __init__(self, inputs: Sequence[tuple[str, tuple[int, ...]]], host: Host) -> None:
        self.inputs = list(inputs)
        self.host = host
        self.rng = np.random.default_rng(host.seed)

    def __call__(self, rows: int) -> dict[str, np.ndarray]:
        source = self.host.noise_source
        if source is not None:
            return self._checked(source(rows), rows)
        return {name: self.rng.standard_normal((rows, *shape), dtype=np.float32) for name, shape in self.inputs}

    def _checked(self, noise: object, rows: int) -> dict[str, np.ndarray]:
        """A caller's draw, refused unless it is what the core takes: the shape, numbers, and finite.

        NaN or inf in the initial sample runs through every denoising step into the actions
        (all NaN, or a plausible chunk from a wrong sample), so it is never passed on, whatever
        ``check_inputs`` says: unlike a sensor reading, noise is never legitimately NaN.
        """
        if not isinstance(noise, Mapping):
            raise BadInputError(
                f"noise_source returned a {type(noise).__name__}; it must return a dict of arrays "
                f"({', '.join(n for n, _ in self.inputs)})"
            )
        out = {}
        for name, shape in self.inputs:
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


class NoGuidance:
    """RTC inputs with no previous chunk (length 0, delay 0): LeRobot's ``prev_chunk_left_over=None``."""

    def __init__(self, inputs: Sequence[tuple[str, tuple[int, ...], str]]) -> None:
        self.inputs = list(inputs)

    def __call__(self, rows: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((rows, *shape), dtype) for name, shape, dtype in self.inputs}


def _shapes(metadata: ArtifactMetadata, inputs: Sequence[TensorDecl]) -> list[tuple[str, tuple[int, ...]]]:
    sig = metadata.spec.signature
    return [(t.name, tuple(int(d) for d in sig.resolve(t)[1:])) for t in inputs]


#: Role -> provider factory for the inputs the host makes: ``(metadata, inputs of that group, host) -> Provider``.
#: Observation roles are not here: they come from the observation. A family with a new host-made
#: input adds its provider here (e.g. language tokens from the host's tokenizer).
PROVIDERS: dict[frozenset[Role], Callable[[ArtifactMetadata, list[TensorDecl], Host], Provider]] = {
    frozenset({Role.NOISE, Role.STEP_NOISE}): lambda meta, ts, host: NoiseDraws(_shapes(meta, ts), host),
    frozenset({Role.RTC_PREV_CHUNK, Role.RTC_PREV_LEN, Role.RTC_DELAY}): lambda meta, ts, host: NoGuidance(
        [(n, s, t.dtype) for (n, s), t in zip(_shapes(meta, ts), ts, strict=True)]
    ),
}


#: Inputs made from the control step's task string (not by a per-row provider: the task is per call).
LANGUAGE_ROLES = frozenset({Role.LANG_TOKENS, Role.LANG_MASK})


class Language:
    """``LANG_TOKENS`` / ``LANG_MASK`` from the task, for the whole batch, on the caller's thread (a task
    longer than the model's ``tokenizer_max_length`` is one line there, not on the worker)."""

    def __init__(self, inputs: Sequence[TensorDecl], tokenizer: TaskTokenizer | None) -> None:
        self.tokens = next(t.name for t in inputs if t.role is Role.LANG_TOKENS)
        self.mask = next((t.name for t in inputs if t.role is Role.LANG_MASK), None)
        self.tokenizer = tokenizer

    def __call__(self, task: object, batch: int, state: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if self.tokenizer is None:
            raise BadInputError(
                "this model tokenizes its task on the robot and has no tokenizer here: pass tokenizer=<the "
                ".tokenizer.json written beside the artifact> (env POLICY_TOKENIZER)"
            )
        if task is None:
            raise BadInputError(
                "this model takes a language instruction: select_action(observation, task='pick up the cube') "
                "(or observation['task'])"
            )
        # a wrong type is the tokenizer's one-line error; the state is read only by a prompt that carries it (pi0.5)
        tokens, mask = self.tokenizer(cast(Any, task), batch, state)
        out = {self.tokens: tokens}
        if self.mask is not None:
            out[self.mask] = mask
        return out


class Host:
    """The host side of one model for a batch of robots: builds core inputs, owns the history."""

    seed: int | None
    noise_source: NoiseSource | None

    def __init__(
        self,
        metadata: ArtifactMetadata,
        settings: ShimSettings | None = None,
        *,
        seed: int | None = None,
        noise_source: NoiseSource | None = None,
        tokenizer: TaskTokenizer | None = None,
    ) -> None:
        spec = metadata.spec
        self.metadata = metadata
        self.settings = settings or ShimSettings.from_spec(spec)
        self.seed, self.noise_source = seed, noise_source
        self.history = None if spec.host.history is None else ObservationHistory(spec.host.history)
        language = [t for t in spec.signature.inputs if t.role in LANGUAGE_ROLES]
        self.language = Language(language, tokenizer) if language else None
        made = [t for t in spec.signature.inputs if t.role not in OBSERVATION_ROLES | LANGUAGE_ROLES]
        self.providers: list[Provider] = []
        for roles, factory in PROVIDERS.items():
            group = [t for t in made if t.role in roles]
            if group:
                self.providers.append(factory(metadata, group, self))
        unknown = [f"{t.name} ({t.role})" for t in made if not any(t.role in r for r in PROVIDERS)]
        if unknown:
            raise BadInputError(
                f"the model takes {', '.join(unknown)}, which this runtime cannot provide; "
                "upgrade policy-export on the robot's host"
            )

    def _made(self, rows: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for provider in self.providers:
            out.update(provider(rows))
        return out

    def _told(self, task: object, prep: Prepared) -> dict[str, np.ndarray]:
        """The task's inputs for the whole batch (none for a model without language inputs: LeRobot's
        ACT or Diffusion ignore the task too); the step's raw state goes to a prompt that carries it."""
        return {} if self.language is None else self.language(task, prep.batch_size, prep.state)

    def feed(self, prep: Prepared, task: object = None) -> FeedFn:
        """Called once per control step on the caller's thread (keep it cheap: without a history,
        images are converted only when the returned builder runs, i.e. when a chunk is needed).
        ``task``: the step's instruction (one string, or one per robot) for a language model."""
        told = self._told(task, prep)
        if self.history is None:
            observed: FeedFn = prep.feed
            batch = prep.batch_size
        else:
            history = self.history.observe(prep.feed())
            batch = prep.batch_size

            def observed(rows: np.ndarray | None) -> dict[str, np.ndarray]:
                whole = rows is None or len(rows) == batch
                return {k: (h if whole else h[rows]) for k, h in history.items()}

        def build(rows: np.ndarray | None) -> dict[str, np.ndarray]:
            feed = observed(rows)
            whole = rows is None or len(rows) == batch
            feed.update({k: (v if whole else v[rows]) for k, v in told.items()})
            feed.update(self._made(batch if rows is None else len(rows)))
            return feed

        return build

    def single(self, prep: Prepared, task: object = None) -> dict[str, np.ndarray]:
        """The core's inputs for one stateless chunk of this observation, as an episode's first step."""
        feed = prep.feed() if self.history is None else self.history.first(prep.feed())
        feed.update(self._told(task, prep))
        feed.update(self._made(prep.batch_size))
        return feed

    def make_shim(self) -> ActionQueue | TemporalEnsembler:
        return self.settings.make()

    def reset(self, robot: int | None = None) -> None:
        """New episode for every robot or one (per-step host state only; the shim resets itself)."""
        if self.history is not None:
            self.history.reset(robot)


def host_for(metadata: ArtifactMetadata, settings: ShimSettings | None = None, *, seed: int | None = None) -> Host:
    """The host side of this model (``settings``: the shim's, default from the metadata)."""
    return Host(metadata, settings, seed=seed)
