"""Where the stateless core runs: one small interface, one class per place.

The client and the shim only ever call ``infer(feed) -> action_chunk``; a
:class:`CoreHandle` hides whether that is an in-process runtime (ONNX Runtime, TorchScript, a TensorRT engine, via
:mod:`policy_export.runners`) or a Triton server across the network
(:mod:`policy_export.runtime.triton`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from policy_export.errors import BadInputError
from policy_export.spec import ArtifactMetadata


class ModelChangedError(BadInputError):
    """The server now answers with a different model than the one the client checked at start.

    Never retried against the same server: carrying on would run another model's actions on the robot.
    """


class CoreHandle(ABC):
    """Runs the exported core. ``metadata`` describes the model actually being run."""

    name: str = "backend"
    metadata: ArtifactMetadata
    #: Where it runs, for log lines and errors (a file, or a Triton URL and model).
    where: str = "backend"
    #: The core runs in this process, on this machine's cores (the realtime client then gives its
    #: control thread real-time priority by default: control_priority="auto").
    local: bool = False

    def reconnect(self) -> CoreHandle | None:
        """A fresh connection after failures, checked to serve the same model (``ModelChangedError``
        otherwise); ``None`` when there is nothing to reconnect (an in-process runtime: retry as is)."""
        return None

    def probe(self) -> bool | None:
        """Whether the server looks able to take a reconnect right now, answered cheaply and
        without side effects (probed several times a second while reconnecting); ``None`` when
        there is nothing to probe (an in-process runtime)."""
        return None

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Named core inputs (batch first) -> ``action_chunk`` ``[B, chunk_size, action_dim]`` in robot units."""

    @abstractmethod
    def close(self) -> None:
        """Release sessions / connections (idempotent)."""

    def __enter__(self) -> CoreHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalCore(CoreHandle):
    """An artifact file run in this process by its runner (ORT providers cpu / cuda / tensorrt,
    TorchScript, or a TensorRT engine): the same runners ``policy-export verify`` trusts."""

    local = True

    def __init__(self, path: str | Path, *, provider: str = "cpu", threads: int | None = None) -> None:
        from policy_export.runners import open_runner
        from policy_export.runners.onnxrt import PROVIDERS

        if provider not in PROVIDERS:  # the runner would fail with a KeyError traceback
            raise BadInputError(
                f"ONNX Runtime provider {provider!r} (INFERENCE_PROVIDER): use one of {', '.join(PROVIDERS)}"
            )
        self.runner = open_runner(Path(path), ort_provider=provider, threads=threads)
        self.runner.activate()
        self.metadata = self.runner.info.metadata
        self.name = self.runner.name
        self.path = Path(path)
        self.where = str(self.path)

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        out = self.runner.infer(feed)["action_chunk"]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None  # type: ignore[assignment]


#: The names these had before "backend" was left to Triton's backends (kept for callers written against them).
Backend = CoreHandle
LocalBackend = LocalCore
