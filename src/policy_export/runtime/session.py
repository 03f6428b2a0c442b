"""One model's run on the robot's host: the session both clients drive.

A :class:`Session` is the four parts every client needs and nothing about *when* the core
runs: the observation adapter (robot observations in, checked), the host side (core inputs,
observation history, drawn noise, the shim's settings; :mod:`policy_export.runtime.host`), the
backend (where the core runs; reconnects swap it) and the output (numpy, or torch for torch
input). :class:`~policy_export.runtime.PolicyClient` runs it on the caller's thread;
:class:`~policy_export.runtime.realtime.RealtimeClient` on a worker thread. Neither reaches into
the other.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from policy_export.errors import BadInputError
from policy_export.runtime.backends import CoreHandle, LocalCore
from policy_export.runtime.host import Host, NoiseSource
from policy_export.runtime.observation import ObservationAdapter, Prepared
from policy_export.runtime.shim import ShimSettings
from policy_export.runtime.tokenizer import TaskTokenizer, TokenizerSettings
from policy_export.spec import ArtifactMetadata


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


def task_of(observation: Mapping[str, object], task: object) -> object:
    """The step's task: the argument, else the observation's ``"task"`` (as LeRobot's batch carries it)."""
    return task if task is not None else observation.get("task")


def task_tokenizer(
    metadata: ArtifactMetadata, backend: CoreHandle, tokenizer: TaskTokenizer | str | Path | None
) -> TaskTokenizer | None:
    """The host's tokenizer for a model that takes its task as tokens (None for the others): the one
    given, the file given, or the ``<artifact>.tokenizer.json`` written beside an in-process artifact."""
    decl = metadata.spec.host.tokenizer
    if not decl or isinstance(tokenizer, TaskTokenizer):
        return tokenizer if isinstance(tokenizer, TaskTokenizer) else None
    settings = TokenizerSettings.from_dict(decl)
    if tokenizer is not None:
        return TaskTokenizer.from_file(tokenizer, settings)
    path = getattr(backend, "path", None)
    if path is None:
        raise BadInputError(
            f"{backend.where}: the model tokenizes its task on the robot; pass tokenizer=<the .tokenizer.json "
            "written beside the artifact at export, or triton-repo's copy in the version folder> (env POLICY_TOKENIZER)"
        )
    return TaskTokenizer.for_artifact(path, settings)


class Session:
    """Adapter + host side + backend + output of one model (one robot or a batch of robots).

    ``settings``: the shim's (default: the model's own, from its metadata); ``check_inputs``:
    refuse NaN/inf and float images outside [0, 1] in one line; ``seed`` / ``noise_source``:
    the host's noise draws.
    """

    def __init__(
        self,
        backend: CoreHandle,
        settings: ShimSettings | None = None,
        *,
        check_inputs: bool = True,
        seed: int | None = None,
        noise_source: NoiseSource | None = None,
        tokenizer: TaskTokenizer | str | Path | None = None,
    ) -> None:
        self.backend = backend
        self.metadata: ArtifactMetadata = backend.metadata
        spec = self.metadata.spec
        self.host = Host(
            self.metadata,
            settings,
            seed=seed,
            noise_source=noise_source,
            tokenizer=task_tokenizer(self.metadata, backend, tokenizer),
        )
        self.settings = self.host.settings
        if self.settings.chunk_size != spec.chunk_size:
            raise BadInputError(
                f"shim chunk_size {self.settings.chunk_size} != the model's {spec.chunk_size}; "
                "leave settings=None to take them from the model"
            )
        self.adapter = ObservationAdapter(self.metadata, check_values=check_inputs)

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
        tokenizer: TaskTokenizer | str | Path | None = None,
    ) -> Session:
        backend = LocalCore(path, provider=provider, threads=threads)
        return cls._owning(backend, settings, check_inputs=check_inputs, seed=seed, tokenizer=tokenizer)

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
    ) -> Session:
        from policy_export.runtime.triton import DEFAULT_TIMEOUT_S, TritonCore

        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        backend = TritonCore.connect(url, model, version, protocol, timeout_s=timeout_s)
        return cls._owning(backend, settings, check_inputs=check_inputs, seed=seed, tokenizer=tokenizer)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Session:
        """See :meth:`policy_export.runtime.PolicyClient.from_env`."""
        env = os.environ if env is None else env
        check = env_flag(env, "INFERENCE_CHECK_INPUTS", True)
        mode = (env.get("INFERENCE_MODE") or ("local" if env.get("POLICY_ARTIFACT") else "")).strip().lower()
        if mode == "local":
            artifact = env.get("POLICY_ARTIFACT")
            if not artifact:
                raise BadInputError("INFERENCE_MODE=local needs POLICY_ARTIFACT=<exported .onnx / .pt / .plan file>")
            return cls.from_artifact(
                artifact,
                provider=env.get("INFERENCE_PROVIDER", "cpu"),
                check_inputs=check,
                tokenizer=env.get("POLICY_TOKENIZER") or None,
            )
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
                tokenizer=env.get("POLICY_TOKENIZER") or None,
            )
        raise BadInputError(
            f"INFERENCE_MODE must be 'local' or 'triton', got {mode!r}; "
            "set INFERENCE_MODE=local with POLICY_ARTIFACT, or INFERENCE_MODE=triton with TRITON_URL and MODEL_NAME"
        )

    @classmethod
    def _owning(cls, backend: CoreHandle, settings: ShimSettings | None, **kw: Any) -> Session:
        """A session over a backend it opened: closed again if the session cannot be built."""
        try:
            return cls(backend, settings, **kw)
        except BaseException:
            backend.close()
            raise

    # -- the parts both clients use -------------------------------------------------------
    def prepare(self, observation: Mapping[str, object]) -> Prepared:
        """One control step's observation, checked (images are converted when a chunk is needed)."""
        return self.adapter(observation)

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.backend.infer(feed)

    @staticmethod
    def output(array: np.ndarray, prep: Prepared) -> Any:  # np.ndarray, or torch.Tensor (unnamed: no torch here)
        """``array`` as the caller gave its observation: torch in, a CPU torch tensor out; numpy otherwise."""
        if prep.torch_input and "torch" in sys.modules:
            return sys.modules["torch"].from_numpy(array)
        return array

    def close(self) -> None:
        self.backend.close()


class HasSession(Protocol):
    """Anything that runs a :class:`Session` (``PolicyClient``): a ``RealtimeClient`` may be built on it."""

    session: Session
