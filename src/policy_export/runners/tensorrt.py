"""TensorRT runner for ``.plan`` files, through Polygraphy's ``TrtRunner``.

A plan is tied to the GPU model and TensorRT version that built it. Rather than let
TensorRT fail deep in deserialization (or, on a same-architecture GPU, run silently
mis-tuned), ``activate`` compares the sidecar's record with this host first and refuses
with one line naming both. Every "cannot run here" case is an :class:`UnavailableError`,
so ``verify`` reports the plan as skipped with the reason, never as passed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from policy_export.artifacts import ArtifactInfo, read_tensorrt_sidecar
from policy_export.errors import BadInputError, UnavailableError
from policy_export.runners.base import Runner


class TensorRTRunner(Runner):
    """Runs a TensorRT plan on GPU 0, within the batch range of its optimization profile."""

    def __init__(self, info: ArtifactInfo) -> None:
        super().__init__(info)
        self.name = "tensorrt"
        self.record: dict[str, Any] = read_tensorrt_sidecar(info.path).get("tensorrt", {})
        self._runner: Any = None

    def activate(self) -> None:
        from policy_export.tensorrt_host import (
            disable_polygraphy_autoinstall,
            host_info,
            plan_incompatibility,
            tensorrt_unavailable_reason,
        )

        reason = tensorrt_unavailable_reason()
        if reason:
            raise UnavailableError(f"{self.info.path.name}: {reason}")
        mismatch = plan_incompatibility(self.record, host_info())
        if mismatch:
            raise UnavailableError(
                f"{self.info.path.name}: plan was built for another GPU/TensorRT ({mismatch}); "
                "rebuild it on this host with `policy-export tensorrt --onnx ...`"
            )
        disable_polygraphy_autoinstall()
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        from polygraphy.exception import PolygraphyException

        t0 = time.perf_counter()
        try:
            self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(self.info.path))))
            self._runner.activate()
        except PolygraphyException as exc:
            self._runner = None
            raise UnavailableError(
                f"{self.info.path.name}: TensorRT could not load the plan ({str(exc).strip().splitlines()[-1]}); rebuild it on this host"
            ) from exc
        self.load_seconds = time.perf_counter() - t0

    def batch_range(self) -> tuple[int, int | None]:
        prof = self.record.get("profile") or {}
        return int(prof.get("min", 1)), (int(prof["max"]) if "max" in prof else None)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._runner is not None, "activate() first"
        names = [s.name for s in self.info.inputs]
        arrays = self.ordered_inputs(feed)
        batch = int(arrays[0].shape[0])
        lo, hi = self.batch_range()
        if not lo <= batch <= (batch if hi is None else hi):
            raise BadInputError(
                f"{self.info.path.name}: batch {batch} is outside the plan's profile [{lo}, {hi}]; "
                "rebuild with a wider --min-batch/--max-batch or use batch sizes within it"
            )
        out = self._runner.infer(dict(zip(names, arrays, strict=True)))
        return {"action_chunk": self.checked_output(np.array(out["action_chunk"], dtype=np.float32, copy=True))}

    def deactivate(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None
