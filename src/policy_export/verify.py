"""Parity of exported artifacts against LeRobot's own eager inference.

Each artifact runs in its real runtime (through a :class:`~policy_export.runners.Runner`)
on fresh, seeded random inputs at several batch sizes; the reference is LeRobot's
preprocessor + ``predict_action_chunk`` + postprocessor on the same inputs, computed
once and shared by every artifact so that all rows of the report compare against the
same numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from policy_export.artifacts import check_compatible, inspect_artifact
from policy_export.checkpoint import LoadedCheckpoint
from policy_export.compare import merge_samples
from policy_export.enums import Status
from policy_export.errors import BadInputError, UnavailableError
from policy_export.inputs import checkpoint_inputs
from policy_export.parity_report import ArtifactCheck, BatchResult, VerifyReport
from policy_export.reference import eager_chunk
from policy_export.tolerances import DEFAULT_ATOL

log = logging.getLogger(__name__)


class ReferenceCache:
    """Seeded inputs and LeRobot eager outputs, computed once per (format, batch, sample)."""

    def __init__(self, ckpt: LoadedCheckpoint, seed: int) -> None:
        self.ckpt = ckpt
        self.seed = seed
        self._cache: dict[tuple[str, int, int], tuple[dict[str, np.ndarray], np.ndarray]] = {}

    def get(self, image_format: str, batch: int, sample: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        key = (image_format, batch, sample)
        if key not in self._cache:
            rng = np.random.default_rng([self.seed, batch, sample])
            feed = checkpoint_inputs(self.ckpt, batch, rng, image_format)
            self._cache[key] = (feed, eager_chunk(self.ckpt, feed, image_format))
        return self._cache[key]


def verify_artifacts(
    ckpt: LoadedCheckpoint,
    artifacts: list[Path],
    *,
    batch_sizes: list[int],
    samples: int = 2,
    atol: float | None = None,
    rtol: float = 0.0,
    seed: int = 0,
    ort_provider: str = "cpu",
    per_artifact_atol: dict[str, float] | None = None,
    rollout_steps: int = 0,
    progress: Callable[[], None] | None = None,
) -> VerifyReport:
    """Chunk parity of every artifact at every batch size; with ``rollout_steps``, also
    rollout parity (client + shim vs LeRobot's ``select_action``, :mod:`policy_export.rollout`)."""
    if not artifacts:
        raise BadInputError("no --artifact given; pass at least one exported file")
    if any(b < 1 for b in batch_sizes) or samples < 1:
        raise BadInputError("--batch-sizes and --samples must be positive integers")
    overrides = per_artifact_atol or {}
    if not all(t >= 0 for t in (rtol, *([] if atol is None else [atol]), *overrides.values())):  # NaN fails too
        raise BadInputError("--tolerance, --rtol and --artifact-tolerance take non-negative numbers")
    from policy_export.runners import open_runner

    infos = [inspect_artifact(Path(a)) for a in artifacts]  # fail on bad files before any slow work
    for name in overrides:  # a mistyped name would otherwise leave that artifact at the default, silently
        if not any(name in (i.path.name, str(i.path)) for i in infos):
            raise BadInputError(
                f"--artifact-tolerance {name}=...: no --artifact is named {name!r}; use one's file name or path"
            )
    warnings = [check_compatible(i, ckpt.spec, ckpt.path) for i in infos]
    report = VerifyReport(
        checkpoint=str(ckpt.path), policy=ckpt.spec.to_dict(), seed=seed, batch_sizes=list(batch_sizes), samples=samples
    )
    report.extra["default_atol"] = dict(DEFAULT_ATOL)
    refs = ReferenceCache(ckpt, seed)
    for info, warn in zip(infos, warnings, strict=True):
        meta = info.metadata
        check = ArtifactCheck.start(info, atol=atol, rtol=rtol, per_artifact_atol=per_artifact_atol, warnings=warn)
        report.checks.append(check)
        try:
            runner = open_runner(info.path, ort_provider=ort_provider)
            check.runner = runner.name
            runner.activate()
        except UnavailableError as exc:
            check.status, check.reason = Status.SKIPPED, str(exc)
            continue
        lo, hi = runner.batch_range()
        outside = [b for b in batch_sizes if b < lo or (hi is not None and b > hi)]
        if outside:
            runner.deactivate()
            check.status = Status.SKIPPED
            check.reason = (
                f"batch sizes {outside} are outside what {info.path.name} runs ([{lo}, {hi}]); "
                "rebuild it with a wider --min-batch/--max-batch or pass --batch-sizes within that range"
            )
            continue
        try:
            for bs in batch_sizes:
                ref_list, out_list, times = [], [], []
                for s in range(samples):
                    feed, ref = refs.get(meta.image_format, bs, s)
                    t0 = time.perf_counter()
                    out = runner.infer(feed)["action_chunk"]
                    times.append((time.perf_counter() - t0) * 1e3)
                    ref_list.append(ref)
                    out_list.append(np.asarray(out, dtype=np.float32))
                    if progress is not None:
                        progress()
                stats = merge_samples(ref_list, out_list, check.atol, rtol)
                check.results.append(BatchResult(bs, samples, stats, float(np.median(times))))
                if not stats.passed:
                    check.status = Status.FAILED
        finally:
            runner.deactivate()
    if rollout_steps:
        from policy_export.rollout import rollout_checks

        report.checks += rollout_checks(
            ckpt,
            infos,
            steps=rollout_steps,
            batch_sizes=batch_sizes,
            atol=atol,
            rtol=rtol,
            seed=seed,
            ort_provider=ort_provider,
            per_artifact_atol=per_artifact_atol,
            progress=progress,
        )
        report.extra["rollout_steps"] = rollout_steps
    return report
