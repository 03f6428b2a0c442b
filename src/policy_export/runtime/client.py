"""``PolicyClient``: a drop-in for LeRobot's preprocessor + ``select_action`` + postprocessor.

The robot loop hands it the same observation dict it would hand LeRobot and gets the
action in robot units back, while the network runs as an exported, stateless core
somewhere (in this process or on a Triton server) and the queue / temporal ensembling
lives in the shim on the host. Everything the shim needs (chunk size, n_action_steps,
ensembling coefficient, camera names, image format) comes from the artifact's metadata or
the Triton model's config, so nothing is retyped and nothing can drift.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.errors import BadInputError
from policy_export.runtime.backends import CoreHandle, LocalCore
from policy_export.runtime.host import host_for
from policy_export.runtime.observation import ObservationAdapter, Prepared
from policy_export.runtime.rtc import RTCQueue, rtc_settings
from policy_export.runtime.shim import ActionQueue, ShimSettings, TemporalEnsembler

if TYPE_CHECKING:
    from policy_export.runtime.history import HistorySettings
    from policy_export.runtime.realtime import RealtimeClient


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting from the environment (1/0, true/false, yes/no, on/off)."""
    text = (env.get(name) or "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise BadInputError(f"{name}={env.get(name)!r}: use 1 or 0")


class PolicyClient:
    """Stateless core + host-side shim, for a batch of ``B`` robots (``B`` from the observations).

    ``check_inputs`` (default on) refuses NaN/inf and float images outside [0, 1] with one line.
    """

    def __init__(
        self,
        backend: CoreHandle,
        settings: ShimSettings | HistorySettings | None = None,
        *,
        check_inputs: bool = True,
        seed: int | None = None,
        rtc: bool = False,
        rtc_queue_threshold: int | None = None,
    ) -> None:
        self.backend = backend
        self.metadata = backend.metadata
        spec = self.metadata.spec
        self.host = host_for(self.metadata, settings, seed=seed)
        self.settings = self.host.settings
        if self.settings.chunk_size != spec.chunk_size:
            raise BadInputError(
                f"shim chunk_size {self.settings.chunk_size} != the model's {spec.chunk_size}; "
                "leave settings=None to take them from the model"
            )
        self.shim: ActionQueue | TemporalEnsembler | RTCQueue = self.host.make_shim()
        if rtc:  # LeRobot's RTC engine at zero latency: the leftover guides each chunk, which replaces the queue
            self.shim = RTCQueue(rtc_settings(self.metadata, rtc_queue_threshold))
        self.adapter = ObservationAdapter(self.metadata, check_values=check_inputs)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_artifact(
        cls,
        path: str | Path,
        *,
        provider: str = "cpu",
        threads: int | None = None,
        settings: ShimSettings | HistorySettings | None = None,
        check_inputs: bool = True,
        seed: int | None = None,
    ) -> PolicyClient:
        """An exported file run in this process: ONNX (``provider`` cpu | cuda | tensorrt),
        TorchScript, or a TensorRT engine."""
        return cls(LocalCore(path, provider=provider, threads=threads), settings, check_inputs=check_inputs, seed=seed)

    @classmethod
    def from_triton(
        cls,
        url: str | Sequence[str],
        model: str,
        version: str | int | None = None,
        protocol: str | None = None,
        *,
        timeout_s: float | None = None,
        settings: ShimSettings | HistorySettings | None = None,
        check_inputs: bool = True,
        seed: int | None = None,
    ) -> PolicyClient:
        """A model on a Triton server. ``url`` is ``host:port`` (or ``grpc://`` / ``http://host:port``),
        or several replicas (a list, or comma-separated): the first that answers is used and a
        reconnect tries the next, refusing any that serves another model.
        ``protocol`` is "grpc" or "http", by default what the URL's scheme says, else gRPC.
        ``version=None`` takes the newest version the server serves and pins it for this client."""
        from policy_export.runtime.triton import DEFAULT_TIMEOUT_S, TritonCore

        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        backend = TritonCore.connect(url, model, version, protocol, timeout_s=timeout_s)
        return cls(backend, settings, check_inputs=check_inputs, seed=seed)

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
        env = os.environ if env is None else env
        check = env_flag(env, "INFERENCE_CHECK_INPUTS", True)
        mode = (env.get("INFERENCE_MODE") or ("local" if env.get("POLICY_ARTIFACT") else "")).strip().lower()
        if mode == "local":
            artifact = env.get("POLICY_ARTIFACT")
            if not artifact:
                raise BadInputError("INFERENCE_MODE=local needs POLICY_ARTIFACT=<exported .onnx / .pt / .plan file>")
            return cls.from_artifact(artifact, provider=env.get("INFERENCE_PROVIDER", "cpu"), check_inputs=check)
        if mode == "triton":
            url, model = env.get("TRITON_URL"), env.get("MODEL_NAME")
            if not url or not model:
                raise BadInputError("INFERENCE_MODE=triton needs TRITON_URL=<host:port> and MODEL_NAME=<model>")
            timeout = env.get("TRITON_TIMEOUT_S") or None
            try:
                timeout_s = float(timeout) if timeout else None
            except ValueError:
                raise BadInputError(f"TRITON_TIMEOUT_S={timeout!r}: give seconds as a number, e.g. 5") from None
            return cls.from_triton(
                url,
                model,
                env.get("MODEL_VERSION") or None,
                env.get("TRITON_PROTOCOL") or None,
                timeout_s=timeout_s,
                check_inputs=check,
            )
        raise BadInputError(
            f"INFERENCE_MODE must be 'local' or 'triton', got {mode!r}; "
            "set INFERENCE_MODE=local with POLICY_ARTIFACT, or INFERENCE_MODE=triton with TRITON_URL and MODEL_NAME"
        )

    # -- the LeRobot-shaped API -----------------------------------------------------------
    def predict_chunk(self, observation: Mapping[str, object]) -> Any:
        """The whole action chunk ``[B, chunk_size, action_dim]`` in robot units (no shim state).

        LeRobot's ``predict_action_chunk`` followed by its postprocessor.
        """
        prep = self.adapter(observation)
        return self._output(self.backend.infer(self.host.single(prep)), prep)

    def select_action(self, observation: Mapping[str, object]) -> Any:
        """The next action ``[B, action_dim]`` of every robot, in robot units.

        An observation without a batch axis is one robot; like LeRobot's pipeline the action
        then still has the batch axis (``[1, action_dim]``). numpy in, numpy out; torch in,
        a CPU torch tensor out.
        """
        prep = self.adapter(observation)
        feed = self.host.feed(prep)

        def predict(rows: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
            inputs = feed(rows)
            if extra:  # the shim's own inputs (RTC's leftover and delay)
                inputs.update(extra)
            return self.backend.infer(inputs)

        return self._output(self.shim.step(predict, prep.batch_size), prep)

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
    def _output(array: np.ndarray, prep: Prepared) -> Any:  # np.ndarray, or torch.Tensor (unnamed: no torch here)
        if prep.torch_input and "torch" in sys.modules:
            return sys.modules["torch"].from_numpy(array)
        return array

    def close(self) -> None:
        self.backend.close()

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
