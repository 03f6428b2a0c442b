"""Export the stateless core to TorchScript (``torch.jit.trace``) for libtorch hosts.

Why tracing and not scripting: the core is one straight-line tensor program (no
data-dependent control flow), and LeRobot's modules are not written to be scriptable. A
family whose core loops (Diffusion's denoising steps) hands over a module with the loop
already scripted around a traced body (``Family.for_tracing``), so the file holds one loop,
not one copy of the network per step.
Tracing records ``state.shape[0]`` as a size op, so the batch axis stays dynamic; we trace
with a batch of 2 (like the ONNX export) and then prove it by running the *saved* file at
batch sizes it was not traced with.

The saved module references only TorchScript-compiled code and tensors: ``torch.jit.load``
needs neither lerobot nor policy-export. Metadata travels inside the archive as the extra
file ``policy_export.json`` (the same :class:`ArtifactMetadata` the ONNX file embeds).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from policy_export.artifacts import TORCHSCRIPT_EXTRA
from policy_export.checkpoint import LoadedCheckpoint
from policy_export.enums import ArtifactKind, ImageFormat, Precision
from policy_export.errors import ParityError, PolicyExportError, first_line
from policy_export.fsutil import atomic_output
from policy_export.input_files import files_read
from policy_export.spec import ArtifactMetadata
from policy_export.versions import library_versions

if TYPE_CHECKING:
    from torch import nn

TRACE_BATCH = 2
#: Batch sizes the saved file is checked at right after export; none equals TRACE_BATCH.
CHECK_BATCHES = (1, 3)


@dataclass
class TorchScriptExportResult:
    path: Path
    image_format: str
    quick_check_max_abs: float
    checked_batches: tuple[int, ...]


@contextlib.contextmanager
def _quiet_tracer() -> Iterator[None]:
    """The tracer warns about every Python int it records (``state.shape[0]`` included); the
    post-export check at other batch sizes is what proves those are not baked in."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export_torchscript(
    ckpt: LoadedCheckpoint,
    output: Path,
    *,
    force: bool = False,
    image_format: ImageFormat = ImageFormat.FLOAT32,
    quick_check: bool = True,
) -> TorchScriptExportResult:
    """Trace, save with metadata, reload the saved file and check it, then move into place."""
    import torch

    from policy_export.core import build_core, example_args, for_tracing, write_sidecars

    core = build_core(ckpt, image_format=image_format)
    args = example_args(ckpt, TRACE_BATCH, image_format)
    meta = ArtifactMetadata(
        spec=ckpt.spec,
        artifact_kind=ArtifactKind.TORCHSCRIPT,
        image_format=image_format,
        precision=Precision.FP32,
        exporter="torch.jit.trace",
        opset=None,
        versions=library_versions(),
    )
    with atomic_output(output, force=force, what="TorchScript file", inputs=files_read(ckpt.path)) as tmp:
        with torch.inference_mode(False), torch.no_grad(), _quiet_tracer():
            try:
                # check_trace would only re-run the trace batch; our check below uses other sizes.
                module = for_tracing(ckpt, core, args)
                traced = (
                    module
                    if isinstance(module, torch.jit.ScriptModule)
                    else torch.jit.trace(module, args, check_trace=False)
                )
            except Exception as exc:
                raise PolicyExportError(f"torch.jit.trace failed: {first_line(exc)}") from exc
        # Saved to memory first: torch's file writer aborts the whole process (SIGABRT, exit 134) when
        # the disk fills, where a plain write raises an OSError the CLI reports as one line.
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={TORCHSCRIPT_EXTRA: meta.to_json()})
        tmp.write_bytes(buf.getbuffer())
        del buf
        max_abs = _quick_check(core, tmp, ckpt, image_format) if quick_check else float("nan")
        write_sidecars(ckpt, output)
    return TorchScriptExportResult(output, image_format, max_abs, CHECK_BATCHES if quick_check else ())


def _quick_check(core: nn.Module, path: Path, ckpt: LoadedCheckpoint, image_format: str) -> float:
    """The saved file (not the in-memory trace) vs the core, at batch sizes other than the trace batch."""
    import torch

    from policy_export.compare import parity_gate
    from policy_export.core import example_args
    from policy_export.tolerances import quick_check_atol

    loaded = torch.jit.load(str(path), map_location="cpu").eval()
    worst = 0.0
    for i, batch in enumerate(CHECK_BATCHES):
        feed = example_args(ckpt, batch, image_format, seed=1234 + i)
        with torch.no_grad():
            got = loaded(*feed)
            want = core(*feed)
        if tuple(got.shape) != tuple(want.shape):
            raise ParityError(
                f"{path.name}: traced module returned {tuple(got.shape)} at batch {batch}, expected {tuple(want.shape)}: "
                "the batch size was baked into the trace; the file was not written"
            )
        scale = ckpt.action_scale  # in the policy's normalized action space, as verify gates (issue 19)
        stats = parity_gate(
            scale.normalize(want.numpy()),
            scale.normalize(got.numpy()),
            quick_check_atol("fp32"),
            what=f"{path.name}: quick parity check failed right after export at batch {batch} (normalized action space)",
            then="the file was not written",
        )
        worst = max(worst, stats.max_abs)
    return worst
