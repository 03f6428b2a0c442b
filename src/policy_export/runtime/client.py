"""``PolicyClient``: a drop-in for LeRobot's preprocessor + ``select_action`` + postprocessor.

The robot loop hands it the same observation dict it would hand LeRobot and gets the
action in robot units back, while the network runs as an exported, stateless core
somewhere (in this process or on a Triton server) and the queue / temporal ensembling
lives in the shim on the host. Everything the shim needs (chunk size, n_action_steps,
ensembling coefficient, camera names, image format) comes from the artifact's metadata or
the Triton model's config, so nothing is retyped and nothing can drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.errors import BadInputError
from policy_export.runtime.backends import CoreHandle
from policy_export.runtime.observation import Prepared
from policy_export.runtime.rtc import PREV_CHUNK, RTCQueue, leftover_batch, rtc_settings
from policy_export.runtime.session import Session, env_flag, task_of
from policy_export.runtime.shim import ActionQueue, ShimSettings, TemporalEnsembler
from policy_export.runtime.tokenizer import TaskTokenizer

if TYPE_CHECKING:
    from policy_export.runtime.realtime import RealtimeClient

__all__ = ["PolicyClient", "env_flag"]


class PolicyClient:
    """Stateless core + host-side shim, for a batch of ``B`` robots (``B`` from the observations).

    A :class:`~policy_export.runtime.session.Session` (adapter, host side, backend, output) run on
    the caller's thread. ``check_inputs`` (default on) refuses NaN/inf and float images outside
    [0, 1] with one line.
    """

    def __init__(
        self,
        backend: CoreHandle | None = None,
        settings: ShimSettings | None = None,
        *,
        check_inputs: bool = True,
        seed: int | None = None,
        rtc: bool = False,
        rtc_queue_threshold: int | None = None,
        tokenizer: TaskTokenizer | str | Path | None = None,
        session: Session | None = None,
    ) -> None:
        if session is None:
            if backend is None:
                raise TypeError("PolicyClient needs a backend (or a session)")
            session = Session(backend, settings, check_inputs=check_inputs, seed=seed, tokenizer=tokenizer)
        self.session = session
        self.metadata = session.metadata
        self.host = session.host
        self.settings = session.settings
        self.adapter = session.adapter
        self.shim: ActionQueue | TemporalEnsembler | RTCQueue = self.host.make_shim()
        if rtc:  # LeRobot's RTC engine at zero latency: the leftover guides each chunk, which replaces the queue
            self.shim = RTCQueue(rtc_settings(self.metadata, rtc_queue_threshold))

    @property
    def backend(self) -> CoreHandle:
        return self.session.backend

    @backend.setter
    def backend(self, value: CoreHandle) -> None:
        self.session.backend = value

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_artifact(
        cls,
        path: str | Path,
        *,
        provider: str = "cpu",
        threads: int | None = None,
        settings: ShimSettings | None = None,
        check_inputs: bool = True,
        seed: int | None = None,
        rtc: bool = False,
        tokenizer: TaskTokenizer | str | Path | None = None,
    ) -> PolicyClient:
        """An exported file run in this process: ONNX (``provider`` cpu | cuda | tensorrt),
        TorchScript, or a TensorRT engine. A language model's tokenizer is the ``.tokenizer.json``
        beside the file unless ``tokenizer`` names another; ``rtc``: see :class:`PolicyClient`."""
        session = Session.from_artifact(
            path,
            provider=provider,
            threads=threads,
            settings=settings,
            check_inputs=check_inputs,
            seed=seed,
            tokenizer=tokenizer,
        )
        try:
            return cls(session=session, rtc=rtc)
        except BaseException:
            session.close()
            raise

    @classmethod
    def from_triton(
        cls,
        url: str | Sequence[str],
        model: str,
        version: str | int | None = None,
        protocol: str | None = None,
        *,
        timeout_s: float | None = None,
        settings: ShimSettings | None = None,
        check_inputs: bool = True,
        seed: int | None = None,
        tokenizer: TaskTokenizer | str | Path | None = None,
        rtc: bool = False,
    ) -> PolicyClient:
        """A model on a Triton server. ``url`` is ``host:port`` (or ``grpc://`` / ``http://host:port``),
        or several replicas (a list, or comma-separated): the first that answers is used and a
        reconnect tries the next, refusing any that serves another model.
        ``protocol`` is "grpc" or "http", by default what the URL's scheme says, else gRPC.
        ``version=None`` takes the newest version the server serves and pins it for this client."""
        session = Session.from_triton(
            url,
            model,
            version,
            protocol,
            timeout_s=timeout_s,
            settings=settings,
            check_inputs=check_inputs,
            seed=seed,
            tokenizer=tokenizer,
        )
        try:
            return cls(session=session, rtc=rtc)
        except BaseException:
            session.close()
            raise

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PolicyClient:
        """Configured the way the robot's deployment sets it up.

        ``INFERENCE_MODE=local`` (default when ``POLICY_ARTIFACT`` is set) runs ``POLICY_ARTIFACT``
        here (``INFERENCE_PROVIDER`` cpu | cuda | tensorrt); ``INFERENCE_MODE=triton`` talks to
        ``TRITON_URL`` (``TRITON_PROTOCOL`` grpc | http, default from the URL scheme or grpc) for
        ``MODEL_NAME`` / ``MODEL_VERSION`` (default: the server's version policy), with
        ``TRITON_TIMEOUT_S`` per call; ``TRITON_URL`` may list replicas separated by commas.
        ``INFERENCE_CHECK_INPUTS=0`` turns the NaN/inf and [0, 1] image checks off.
        """
        return cls(session=Session.from_env(env))

    # -- the LeRobot-shaped API -----------------------------------------------------------
    def predict_chunk(
        self,
        observation: Mapping[str, object],
        task: str | Sequence[str] | None = None,
        *,
        prev_chunk_left_over: object = None,
        inference_delay: int | Sequence[int] = 0,
    ) -> Any:
        """The whole action chunk ``[B, chunk_size, action_dim]`` in robot units (no shim state).

        LeRobot's ``predict_action_chunk`` followed by its postprocessor. For a model with RTC
        inputs, ``prev_chunk_left_over`` (``[n, A]`` or ``[B, n, A]``, robot units, ``n <= chunk_size``)
        and ``inference_delay`` (control steps, ``< chunk_size``) guide it as LeRobot's keywords do.
        """
        prep = self.session.prepare(observation)
        feed = self.host.single(prep, task_of(observation, task))
        if prev_chunk_left_over is not None:
            if PREV_CHUNK not in feed:
                raise BadInputError("prev_chunk_left_over: this model takes no RTC inputs")
            spec = self.metadata.spec
            feed.update(
                leftover_batch(prev_chunk_left_over, inference_delay, prep.batch_size, spec.chunk_size, spec.action_dim)
            )
        return self.session.output(self.session.infer(feed), prep)

    def select_action(self, observation: Mapping[str, object], task: str | Sequence[str] | None = None) -> Any:
        """The next action ``[B, action_dim]`` of every robot, in robot units.

        An observation without a batch axis is one robot; like LeRobot's pipeline the action
        then still has the batch axis (``[1, action_dim]``). numpy in, numpy out; torch in,
        a CPU torch tensor out. ``task``: the instruction of a language model (one, or one per
        robot; else ``observation["task"]``), tokenized here and cached per task.
        """
        prep = self.session.prepare(observation)
        feed = self.host.feed(prep, task_of(observation, task))

        def predict(rows: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
            inputs = feed(rows)
            if extra:  # the shim's own inputs (RTC's leftover and delay)
                inputs.update(extra)
            return self.session.infer(inputs)

        return self.session.output(self.shim.step(predict, prep.batch_size), prep)

    def reset(self, robot: int | None = None) -> None:
        """Start a new episode for every robot, or for robot ``robot`` of the batch only."""
        self.shim.reset(robot)
        self.host.reset(robot)

    def realtime(self, fps: float, **settings: Any) -> RealtimeClient:
        """This client run by a :class:`~policy_export.runtime.realtime.RealtimeClient` (one robot):
        the model runs on a worker thread and ``select_action`` never waits for it. ``settings``:
        the ``RealtimeSettings`` fields (``buffer_time_s``, ``merge``, ``fallback``, ...)."""
        from policy_export.runtime.realtime import RealtimeClient

        return RealtimeClient(self, fps, **settings)

    # -- plumbing -------------------------------------------------------------------------
    @staticmethod
    def _output(array: np.ndarray, prep: Prepared) -> Any:  # kept for callers written against it
        return Session.output(array, prep)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        spec = self.metadata.spec
        return (
            f"PolicyClient({self.backend.name}, {self.settings.mode}, chunk {spec.chunk_size}x{spec.action_dim}, "
            f"n_action_steps={self.settings.n_action_steps}, image_format={self.metadata.image_format})"
        )
