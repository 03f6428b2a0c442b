"""The runner interface: what every runner does, and nothing about which runners exist."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from policy_export.artifacts import ArtifactInfo
from policy_export.dtypes import numpy_name
from policy_export.errors import BadInputError


class Runner(ABC):
    """Runs one artifact. Heavy runtimes are imported and sessions created in ``activate``."""

    name: str = "runner"

    def __init__(self, info: ArtifactInfo) -> None:
        self.info = info
        self.load_seconds: float = 0.0

    @abstractmethod
    def activate(self) -> None: ...

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def deactivate(self) -> None:
        """Release the session/engine."""

    def batch_range(self) -> tuple[int, int | None]:
        """Smallest and largest batch this artifact runs (None: no upper bound).

        Only TensorRT plans are bounded (their optimization profile); callers check a
        planned batch size up front instead of failing half-way through a run.
        """
        return 1, None

    def checked_output(self, out: np.ndarray) -> np.ndarray:
        """The graph's ``action_chunk`` must have the shape the metadata declares (a TorchScript or
        TensorRT graph's output is known only once it ran): the runtime sizes buffers and fallbacks
        from the metadata, so a graph answering in another width is refused, in one line."""
        spec = self.info.metadata.spec
        want = (spec.chunk_size, spec.action_dim)
        if out.ndim != 3 or tuple(out.shape[1:]) != want:
            raise BadInputError(
                f"{self.info.path.name}: the graph returned action_chunk {list(out.shape)}, its metadata says "
                f"[batch, {want[0]}, {want[1]}] (spec.chunk_size, spec.action_dim); re-export the artifact"
            )
        return out

    def ordered_inputs(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The feed in the artifact's input order, checked against its signature.

        Runtimes report a wrong camera resolution or dtype as a stack trace from deep inside
        (or, for TorchScript, as a shape error in some convolution); this names the input,
        what it got, what the artifact takes and what to do, in one line.
        """
        name = self.info.path.name
        wanted = [s.name for s in self.info.inputs]
        arrays, batch = [], None
        for sig in self.info.inputs:
            if sig.name not in feed:
                raise BadInputError(f"{name}: missing input '{sig.name}'; the artifact takes {wanted}")
            arr = np.asarray(feed[sig.name])
            dtype = numpy_name(sig.dtype)
            if arr.dtype != dtype:
                raise BadInputError(f"{name}: input '{sig.name}' is {arr.dtype}, the artifact takes {dtype}")
            fixed = sig.shape[1:]
            if arr.ndim != len(sig.shape) or any(
                isinstance(d, int) and d > 0 and d != got for d, got in zip(fixed, arr.shape[1:], strict=True)
            ):
                hint = "; the image size is fixed at export: resize the frames or re-export" if arr.ndim == 4 else ""
                raise BadInputError(
                    f"{name}: input '{sig.name}' has shape {list(arr.shape)}, the artifact takes [batch, {', '.join(map(str, fixed))}]{hint}"
                )
            if batch is not None and arr.shape[0] != batch:
                raise BadInputError(f"{name}: input '{sig.name}' has batch {arr.shape[0]}, the others {batch}")
            batch = arr.shape[0]
            arrays.append(np.ascontiguousarray(arr))
        return arrays

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
