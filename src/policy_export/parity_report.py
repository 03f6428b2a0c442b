"""The parity report: what ``verify`` (chunk and rollout checks) found, and how it is shown.

The records (:class:`VerifyReport` of :class:`ArtifactCheck` rows of :class:`BatchResult`)
live below both checks that fill them (``verify`` and ``rollout``), and are rendered here:
a Rich table for people, JSON and JUnit XML for CI.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.action_error import DimError, worst_frac_std
from policy_export.action_space import ActionScale
from policy_export.artifacts import ArtifactInfo
from policy_export.compare import ErrorStats, compare
from policy_export.enums import Status, ToleranceSpace
from policy_export.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_PARITY_FAILED, exit_status
from policy_export.fsutil import REPORT_MARK, write_report_atomic
from policy_export.tolerances import default_atol, default_tolerance_std

if TYPE_CHECKING:
    from rich.table import Table


@dataclass
class BatchResult:
    batch_size: int
    samples: int
    #: The gated figures, in the check's ``tolerance_space``.
    stats: ErrorStats
    infer_ms_median: float
    #: The same comparison in robot units, reported beside a normalized-space gate (figures only: not gated).
    robot_units: ErrorStats | None = None
    #: Error per action dimension (robot units and as a fraction of the dataset's action std).
    dims: list[DimError] = field(default_factory=list)
    #: The per-dimension gate (``--tolerance-std``); None: only the absolute/relative one applies.
    tolerance_std: float | None = None

    @property
    def worst_frac_std(self) -> float:
        return worst_frac_std(self.dims)

    @property
    def passed(self) -> bool:
        return self.stats.passed and (self.tolerance_std is None or self.worst_frac_std <= self.tolerance_std)


def gated_compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    atol: float,
    rtol: float,
    space: ToleranceSpace | str,
    scale: ActionScale,
) -> tuple[ErrorStats, ErrorStats | None]:
    """Robot-unit actions compared in ``space``: (the gated statistics, robot-unit statistics beside them
    when the gate is in the normalized space). ``rtol`` is relative to the reference in that same space."""
    if space == ToleranceSpace.ROBOT:
        return compare(reference, candidate, atol, rtol), None
    gated = compare(scale.normalize(reference), scale.normalize(candidate), atol, rtol)
    return gated, compare(reference, candidate, atol, rtol)


@dataclass
class ArtifactCheck:
    artifact: str
    kind: str
    runner: str
    precision: str
    image_format: str
    atol: float
    rtol: float
    status: Status
    reason: str = ""
    #: Where ``atol`` came from: "default fp32" / "default fp16" / "--tolerance" / "--artifact-tolerance".
    atol_source: str = ""
    warnings: list[str] = field(default_factory=list)
    results: list[BatchResult] = field(default_factory=list)
    #: "chunk" (one core call vs predict_action_chunk) or a rollout label (client + shim vs select_action).
    check: str = "chunk"
    #: Where ``atol``/``rtol`` apply: the policy's normalized action space (default) or robot units.
    tolerance_space: str = ToleranceSpace.NORMALIZED
    #: Per-dimension gate, as a fraction of the action std (reduced-precision artifacts; None: none).
    tolerance_std: float | None = None
    #: "uniform" (iid pixels, states around the statistics) or "frames" (:mod:`policy_export.frames`).
    inputs: str = "uniform"

    @classmethod
    def start(
        cls,
        info: ArtifactInfo,
        *,
        atol: float | None,
        rtol: float,
        per_artifact_atol: dict[str, float] | None,
        warnings: list[str],
        check: str = "chunk",
        tolerance_space: ToleranceSpace | str = ToleranceSpace.NORMALIZED,
    ) -> ArtifactCheck:
        """A passing check of ``info`` with its tolerance resolved: per-artifact override, then
        ``--tolerance``, then the default for the artifact's precision (the source is recorded)."""
        table = per_artifact_atol or {}
        override = table.get(info.path.name, table.get(str(info.path)))
        if override is not None:
            tol, source = override, "--artifact-tolerance"
        elif atol is not None:
            tol, source = atol, "--tolerance"
        else:
            tol, source = default_atol(info.metadata.precision), f"default {info.metadata.precision}"
        meta = info.metadata
        return cls(
            artifact=str(info.path),
            kind=info.kind,
            runner="",
            precision=meta.precision,
            image_format=meta.image_format,
            atol=tol,
            rtol=rtol,
            status=Status.PASSED,
            atol_source=source,
            warnings=warnings,
            check=check,
            tolerance_space=ToleranceSpace(tolerance_space),
        )


def apply_std_contract(check: ArtifactCheck, tolerance_std: float | None, std: np.ndarray, scale: ActionScale) -> None:
    """Reduced-precision artifacts (bf16, int8) are judged per action dimension as a fraction of the
    dataset's action std (``--tolerance-std``, default by precision), on frame-like inputs: the fp32
    tolerance (1e-4) would fail them on rounding they are allowed by design, and iid-noise pixels are
    not what they were calibrated for. Where no ``--tolerance``/``--artifact-tolerance`` was given, the
    absolute gate becomes the loosest per-dimension bound in the gated space, so the std gate decides.
    Chunk and rollout checks both go through here: one contract for both."""
    lowp = default_tolerance_std(check.precision)
    if lowp is None:
        return
    check.tolerance_std = lowp if tolerance_std is None else tolerance_std
    check.inputs = "frames"
    if check.atol_source.startswith("default"):
        bound = std if check.tolerance_space == ToleranceSpace.ROBOT else std / scale.scale
        check.atol = float(check.tolerance_std * bound.max())
        check.atol_source = f"default {check.precision}: --tolerance-std x largest action std"


@dataclass
class VerifyReport:
    checkpoint: str
    policy: dict[str, Any]
    seed: int
    batch_sizes: list[int]
    samples: int
    checks: list[ArtifactCheck] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if any(c.status == Status.FAILED for c in self.checks):
            return EXIT_PARITY_FAILED
        if any(c.status == Status.SKIPPED for c in self.checks):
            return EXIT_BAD_INPUT
        return EXIT_OK

    @property
    def status(self) -> Status:
        return exit_status(self.exit_code)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status
        d["exit_code"] = self.exit_code
        return d


def _fmt(x: float) -> str:
    return f"{x:.2e}" if x == x else "nan"


def _runner(c: ArtifactCheck) -> str:
    """Rollout rows name their mode next to the runner (e.g. ``onnxruntime-cpu rollout queue n=10``)."""
    return c.runner if c.check == "chunk" else f"{c.runner or c.kind} {c.check}"


def render_table(report: VerifyReport) -> Table:
    from rich.markup import escape
    from rich.table import Table

    space = report.extra.get("tolerance_space", ToleranceSpace.NORMALIZED)
    table = Table(
        title=f"Parity vs LeRobot eager - {report.checkpoint} (errors in the {space} action space)",
        title_justify="left",
    )
    defaults = report.extra.get("default_atol") or {}
    if defaults:
        table.caption = (
            "default atol by precision: " + ", ".join(f"{p} {v:g}" for p, v in defaults.items()) + "; "
            "the atol column is the one applied (--tolerance / --artifact-tolerance override it)"
        )
        if space == ToleranceSpace.NORMALIZED:
            table.caption += (
                "; errors and atol are in the policy's normalized action space, 'robot' is max abs in robot units "
                "(--tolerance-space robot gates on robot units)"
            )
        table.caption_justify = "left"
    for col in (
        "artifact",
        "runner",
        "prec",
        "batch",
        "max abs",
        "mean abs",
        "p99 abs",
        "max rel",
        "cosine",
        "worst [s,b,t,a]",
        "robot",
        "min atol",
        "atol",
        "max/std",
        "status",
    ):
        table.add_column(col, justify="right" if col not in ("artifact", "runner", "status") else "left")
    for c in report.checks:
        name = escape(Path(c.artifact).name)  # file names and reasons are not Rich markup
        if not c.results:
            table.add_row(
                name, _runner(c) or c.kind, c.precision, "-", *["-"] * 9, f"[yellow]{c.status}[/]: {escape(c.reason)}"
            )
            continue
        for r in c.results:
            s = r.stats
            ok = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
            frac = f"{r.worst_frac_std:.4f}" if r.dims else "-"
            if r.tolerance_std is not None:
                frac += f" <= {r.tolerance_std:g}" if r.worst_frac_std <= r.tolerance_std else f" > {r.tolerance_std:g}"
            table.add_row(
                name,
                _runner(c),
                c.precision,
                str(r.batch_size),
                _fmt(s.max_abs),
                _fmt(s.mean_abs),
                _fmt(s.p99_abs),
                _fmt(s.max_rel),
                f"{s.cosine:.7f}",
                str(s.worst_index),
                _fmt((r.robot_units or s).max_abs),
                _fmt(s.min_passing_atol),
                _fmt(s.atol),
                frac,
                ok,
            )
    return table


def per_dim_lines(report: VerifyReport) -> list[str]:
    """Per action dimension, for every row that has a ``--tolerance-std`` gate: max abs error in robot units
    and as a fraction of the dataset's action std (plain text, one line per artifact and batch size)."""
    lines = []
    for c in report.checks:
        for r in c.results:
            if r.tolerance_std is None or not r.dims:
                continue
            dims = ", ".join(f"{d.max_abs:.2e} ({100 * d.max_frac_std:.2f}%)" for d in r.dims)
            lines.append(
                f"{Path(c.artifact).name} batch {r.batch_size} on {c.inputs} inputs, max abs per action dim "
                f"(% of action std): {dims}"
            )
    return lines


def report_inputs(report: VerifyReport) -> list[Path]:
    """What the run read: a report written over any of these would destroy the evidence it describes."""
    from policy_export.input_files import files_read

    return files_read(Path(report.checkpoint), [Path(c.artifact) for c in report.checks])


def write_json(report: VerifyReport, path: Path, force: bool = False) -> None:
    """``force`` overwrites a file that is not one of our reports; an input never (see fsutil)."""
    text = json.dumps(report.to_dict(), indent=2, default=str) + "\n"
    write_report_atomic(path, text, force, report_inputs(report), "JSON report")


def write_junit(report: VerifyReport, path: Path, force: bool = False) -> None:
    suites = ET.Element("testsuites", name=f"{REPORT_MARK} verify")
    for c in report.checks:
        name = Path(c.artifact).name + ("" if c.check == "chunk" else f" {c.check}")
        suite = ET.SubElement(suites, "testsuite", name=name, tests=str(max(1, len(c.results))))
        failures = 0
        if not c.results:
            case = ET.SubElement(suite, "testcase", classname=name, name=f"{c.kind} parity")
            ET.SubElement(case, "skipped", message=c.reason)
        for r in c.results:
            s = r.stats
            case = ET.SubElement(
                suite,
                "testcase",
                classname=name,
                name=f"batch_size={r.batch_size}",
                time=f"{r.infer_ms_median / 1e3:.4f}",
            )
            figures = {"tolerance_space": c.tolerance_space, **s.to_dict()}
            if r.robot_units is not None:
                figures["robot_units"] = r.robot_units.to_dict()
            figures |= {"per_dim": [d.to_dict() for d in r.dims], "tolerance_std": r.tolerance_std}
            ET.SubElement(case, "system-out").text = json.dumps(figures)
            if not r.passed:
                failures += 1
                msg = (
                    f"max abs error {s.max_abs:.3e} > atol {s.atol:.1e} (rtol {s.rtol:g}, {c.tolerance_space} "
                    f"action space) at {s.worst_index}: reference {s.worst_reference:.6g}, "
                    f"artifact {s.worst_candidate:.6g}"
                    if not s.passed
                    else f"worst action dim error {r.worst_frac_std:.4f} of its std > --tolerance-std {r.tolerance_std:g}"
                )
                if r.robot_units is not None:
                    msg += f"; robot units: max abs {r.robot_units.max_abs:.3e}"
                msg += f"; {c.reason}" if c.reason else ""
                ET.SubElement(case, "failure", message=msg, type="ParityError").text = msg
        suite.set("failures", str(failures))
    ET.indent(suites)
    text = ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
    write_report_atomic(path, text, force, report_inputs(report), "JUnit report")
