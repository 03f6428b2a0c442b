"""Parity of exported artifacts against LeRobot's own eager inference.

Each artifact runs in its real runtime (through a :class:`~policy_export.runners.Runner`)
on fresh, seeded random inputs at several batch sizes; the reference is LeRobot's
preprocessor + ``predict_action_chunk`` + postprocessor on the same inputs, computed
once and shared by every artifact so that all rows of the report compare against the
same numbers.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from policy_export.action_error import action_std, per_dim_errors
from policy_export.artifacts import check_compatible, inspect_artifact
from policy_export.checkpoint import LoadedCheckpoint
from policy_export.enums import Status, ToleranceSpace
from policy_export.errors import BadInputError, UnavailableError
from policy_export.families import eager_chunk
from policy_export.inputs import checkpoint_inputs
from policy_export.parity_report import ArtifactCheck, BatchResult, VerifyReport, apply_std_contract, gated_compare
from policy_export.spec import PolicySpec
from policy_export.tolerances import DEFAULT_ATOL, DEFAULT_TOLERANCE_STD

log = logging.getLogger(__name__)


#: Caps on run sizes, with why: each is far beyond what a parity check needs, and far below what would
#: run for days or end in a MemoryError traceback.
MAX_SAMPLES = 10_000  # seeded draws per batch size; the error statistics settle after a handful
MAX_ROLLOUT_STEPS = 100_000  # one LeRobot select_action per step and batch size: hours already
#: Activations of one sample relative to its float32 input images: ResNet's first convolution alone writes
#: 64 channels at half resolution (5.3x); a lower bound, so an estimate above memory is surely too big.
_ACTIVATION_FACTOR = 6


def physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_run_size(
    spec: PolicySpec, batch_sizes: list[int], samples: int = 1, rollout_steps: int = 0, what: str = "--batch-sizes"
) -> None:
    """Refuse, up front and in one line, a run that cannot fit in memory or finish.

    Memory is estimated from the policy's own shapes: every (batch, sample) input and reference
    is kept for the whole run (all artifacts compare against the same numbers), plus a lower bound
    on the activations of the largest batch.
    """
    if samples > MAX_SAMPLES:
        raise BadInputError(
            f"--samples {samples}: at most {MAX_SAMPLES} (each is one more LeRobot eager call per batch size; "
            "the statistics settle after a handful)"
        )
    if rollout_steps > MAX_ROLLOUT_STEPS:
        raise BadInputError(
            f"--rollout {rollout_steps}: at most {MAX_ROLLOUT_STEPS} steps (one LeRobot select_action per step and "
            "batch size; a few chunk lengths cover every queue refill and reset)"
        )
    image = sum(4 * math.prod(c.shape) for c in spec.cameras)
    per_sample = 4 * spec.state_dim + image + 4 * spec.chunk_size * spec.action_dim
    need = sum(batch_sizes) * max(1, samples) * per_sample + max(batch_sizes) * image * _ACTIVATION_FACTOR
    have = physical_memory_bytes()
    if have is not None and need > have:
        raise BadInputError(
            f"{what} {','.join(map(str, batch_sizes))}: needs at least {need / 2**30:,.1f} GiB of memory "
            f"(inputs, references and activations of {per_sample / 2**20:.2f} MiB per sample), this machine has "
            f"{have / 2**30:.1f} GiB; use smaller batch sizes or fewer --samples"
        )


class ReferenceCache:
    """Seeded inputs and LeRobot eager outputs, computed once per (format, batch, sample)."""

    def __init__(self, ckpt: LoadedCheckpoint, seed: int) -> None:
        self.ckpt = ckpt
        self.seed = seed
        self._cache: dict[tuple[str, int, int, str], tuple[dict[str, np.ndarray], np.ndarray]] = {}

    def get(
        self, image_format: str, batch: int, sample: int, inputs: str = "uniform"
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``inputs``: "uniform" (iid pixels) or "frames" (smooth, frame-like images with the dataset's colour statistics)."""
        key = (image_format, batch, sample, inputs)
        if key not in self._cache:
            if inputs == "frames":
                from policy_export.frames import synthetic_batch

                feed = synthetic_batch(
                    self.ckpt.spec, self.ckpt.input_stats, batch, [self.seed, batch, sample], image_format
                )
            else:
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
    allow_other_checkpoint: bool = False,
    tolerance_space: ToleranceSpace | str = ToleranceSpace.NORMALIZED,
    tolerance_std: float | None = None,
) -> VerifyReport:
    """Chunk parity of every artifact at every batch size; with ``rollout_steps``, also
    rollout parity (client + shim vs LeRobot's ``select_action``, :mod:`policy_export.rollout`).

    Tolerances apply in ``tolerance_space``: by default the policy's normalized action space
    (the checkpoint's action statistics and mode), robot-unit figures beside them.

    Every row also reports the error per action dimension, in robot units and as a fraction of the
    dataset's action std. Reduced-precision artifacts (bf16, int8) are gated on that fraction
    (``tolerance_std``, default by precision) and judged on frame-like inputs, the distribution
    they were calibrated for; their atol defaults to the loosest per-dimension bound (in the gated space).
    """
    if not artifacts:
        raise BadInputError("no --artifact given; pass at least one exported file")
    if any(b < 1 for b in batch_sizes) or samples < 1:
        raise BadInputError("--batch-sizes and --samples must be positive integers")
    check_run_size(ckpt.spec, batch_sizes, samples, rollout_steps)
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
    warnings = [check_compatible(i, ckpt.spec, ckpt.path, allow_other_checkpoint) for i in infos]
    if rollout_steps:
        from policy_export.rollout import check_settings

        for info in infos:
            check_settings(info, ckpt)  # before the chunk checks: a refusal should not wait for them
    report = VerifyReport(
        checkpoint=str(ckpt.path), policy=ckpt.spec.to_dict(), seed=seed, batch_sizes=list(batch_sizes), samples=samples
    )
    if tolerance_std is not None and not tolerance_std > 0:
        raise BadInputError("--tolerance-std takes a positive fraction of the action std, e.g. 0.02")
    report.extra["default_atol"] = dict(DEFAULT_ATOL)
    space = ToleranceSpace(tolerance_space)
    scale = ckpt.action_scale
    report.extra["tolerance_space"] = space
    report.extra["action_scale"] = scale.to_dict()
    report.extra["default_tolerance_std"] = dict(DEFAULT_TOLERANCE_STD)
    std = action_std(ckpt.output_stats, ckpt.spec.action_key, ckpt.spec.action_dim)
    report.extra["action_std"] = [float(x) for x in std]
    refs = ReferenceCache(ckpt, seed)
    for info, warn in zip(infos, warnings, strict=True):
        meta = info.metadata
        check = ArtifactCheck.start(
            info, atol=atol, rtol=rtol, per_artifact_atol=per_artifact_atol, warnings=warn, tolerance_space=space
        )
        apply_std_contract(check, tolerance_std, std, scale)
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
                    feed, ref = refs.get(meta.image_format, bs, s, check.inputs)
                    t0 = time.perf_counter()
                    out = runner.infer(feed)["action_chunk"]
                    times.append((time.perf_counter() - t0) * 1e3)
                    ref_list.append(ref)
                    out_list.append(np.asarray(out, dtype=np.float32))
                    if progress is not None:
                        progress()
                stats, robot = gated_compare(np.stack(ref_list), np.stack(out_list), check.atol, rtol, space, scale)
                dims = per_dim_errors(np.stack(ref_list), np.stack(out_list), std)
                result = BatchResult(bs, samples, stats, float(np.median(times)), robot, dims, check.tolerance_std)
                check.results.append(result)
                if not result.passed:
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
            allow_other_checkpoint=allow_other_checkpoint,
            tolerance_space=space,
            tolerance_std=tolerance_std,
        )
        report.extra["rollout_steps"] = rollout_steps
    return report
