"""The export pipeline's record: its steps, their statuses, and the exit code they add up to.

Status rules (the same as ``verify``): a parity failure anywhere -> exit 1; otherwise an
error, or a format that could not be built or run here -> exit 2 ("incomplete"), because
a format the user asked for and did not get must not turn a build green. With
``allow_unavailable`` a format skipped *only* because this machine lacks its runtime (no
GPU / TensorRT) is still reported as skipped but does not fail the run; that is for CI
matrices that run one command on CPU and GPU runners alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy_export.enums import ImageFormat, Precision, Status
from policy_export.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PARITY_FAILED,
    BadInputError,
    ParityError,
    PolicyExportError,
    UnavailableError,
    exit_status,
    os_error_message,
)

if TYPE_CHECKING:
    from policy_export.parity_report import VerifyReport

FORMATS = ("onnx", "torchscript", "tensorrt")
FILE_NAMES = {"onnx": "policy.onnx", "torchscript": "policy.pt", "tensorrt": "policy.plan"}
REPORT_NAME = "export-report.json"


@dataclass
class Step:
    """One pipeline step."""

    name: str  # load | wrap | export | verify
    target: str  # checkpoint | core | onnx | torchscript | tensorrt
    status: Status = Status.RUNNING
    artifact: str | None = None
    duration_s: float = 0.0
    error: str | None = None
    #: For skipped steps: True when the only reason is a runtime missing on this machine.
    unavailable: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineReport:
    checkpoint: str
    out_dir: str
    formats: list[str]
    image_format: ImageFormat
    precision: Precision
    batch_sizes: list[int]
    samples: int
    allow_unavailable: bool
    started_at: str = ""
    duration_s: float = 0.0
    steps: list[Step] = field(default_factory=list)
    #: The verify step's :class:`~policy_export.verify.VerifyReport` (one run over every built artifact).
    verify: VerifyReport | None = None

    @property
    def exit_code(self) -> int:
        if any(s.status == Status.FAILED for s in self.steps):
            return EXIT_PARITY_FAILED
        for s in self.steps:
            if s.status in (Status.ERROR, Status.RUNNING):
                return EXIT_BAD_INPUT
            if s.status == Status.SKIPPED and not (self.allow_unavailable and s.unavailable):
                return EXIT_BAD_INPUT
        return EXIT_OK

    @property
    def status(self) -> Status:
        return exit_status(self.exit_code)

    def step(self, name: str, target: str) -> Step | None:
        return next((s for s in self.steps if s.name == name and s.target == target), None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verify"] = self.verify.to_dict() if self.verify is not None else None
        d["status"] = self.status
        d["exit_code"] = self.exit_code
        return d


def parse_formats(text: str) -> list[str]:
    """``"onnx,torchscript"`` -> ordered, de-duplicated list; tensorrt implies onnx (it is built from it)."""
    asked = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in asked if f not in FORMATS]
    if not asked or unknown:
        raise BadInputError(f"--formats {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    if "tensorrt" in asked and "onnx" not in asked:
        asked.append("onnx")
    return [f for f in FORMATS if f in asked]


StepCallback = Callable[[Step], None]


class Recorder:
    """Appends steps to a report as they start and end, and tells ``on_step`` (the CLI's progress display)."""

    def __init__(self, report: PipelineReport, on_step: StepCallback | None) -> None:
        self.report = report
        self.on_step = on_step

    @contextmanager
    def step(self, name: str, target: str, artifact: Path | None = None) -> Iterator[Step]:
        """Time a step; map our error types onto statuses; unexpected errors are recorded, then re-raised."""
        st = Step(name, target, artifact=str(artifact) if artifact else None)
        self.report.steps.append(st)
        self.notify(st)
        t0 = time.perf_counter()
        try:
            yield st
            if st.status == Status.RUNNING:
                st.status = Status.PASSED
        except UnavailableError as exc:
            st.status, st.error, st.unavailable = Status.SKIPPED, str(exc), True
        except ParityError as exc:
            st.status, st.error = Status.FAILED, str(exc)
        except PolicyExportError as exc:
            st.status, st.error = Status.ERROR, str(exc)
        except OSError as exc:  # a full disk or a read-only mount: this step failed, the others may still run
            st.status, st.error = Status.ERROR, os_error_message(exc, artifact)
        except BaseException as exc:
            st.status, st.error = Status.ERROR, f"{type(exc).__name__}: {exc}"
            raise
        finally:
            st.duration_s = round(time.perf_counter() - t0, 3)
            self.notify(st)

    def skip(self, name: str, target: str, reason: str, unavailable: bool = False) -> None:
        st = Step(name, target, status=Status.SKIPPED, error=reason, unavailable=unavailable)
        self.report.steps.append(st)
        self.notify(st)

    def notify(self, st: Step) -> None:
        if self.on_step is not None:
            self.on_step(st)
