"""libtorch runner for TorchScript files (what Triton's ``pytorch_libtorch`` backend loads).

The module is called positionally (``state`` then one image per camera, in the order the
artifact's metadata lists them), exactly as a libtorch host would call it.
"""

from __future__ import annotations

import time

import numpy as np

from policy_export.artifacts import ArtifactInfo
from policy_export.errors import BadInputError, PolicyExportError, first_line
from policy_export.runners.base import Runner


class TorchScriptRunner(Runner):
    """Runs a ``.pt`` file with ``torch.jit.load`` on CPU."""

    def __init__(self, info: ArtifactInfo, threads: int | None = None) -> None:
        super().__init__(info)
        self.threads = threads
        self.module = None
        self.name = "torchscript-cpu"
        self._saved_threads: int | None = None

    def activate(self) -> None:
        import torch

        t0 = time.perf_counter()
        try:
            module = torch.jit.load(str(self.info.path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise PolicyExportError(
                f"{self.info.path}: torch.jit.load failed ({first_line(exc)}); re-export it with this torch version"
            ) from exc
        self.load_seconds = time.perf_counter() - t0
        takes = len(list(module.graph.inputs())) - 1  # minus self
        if takes != len(self.info.inputs):
            raise BadInputError(
                f"{self.info.path}: its metadata declares {len(self.info.inputs)} inputs "
                f"{[s.name for s in self.info.inputs]} (spec.signature), the TorchScript forward takes {takes}; re-export it"
            )
        self.module = module
        if self.threads:
            # Set only once loaded (a failed load must not leave the pool changed): torch's
            # intra-op pool is process-wide, so deactivate() restores it.
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        assert self.module is not None, "activate() first"
        args = [torch.from_numpy(a) for a in self.ordered_inputs(feed)]
        with torch.inference_mode():
            out = self.module(*args)
        return {"action_chunk": self.checked_output(out.numpy())}

    def deactivate(self) -> None:
        self.module = None
        if self._saved_threads is not None:
            import torch

            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
