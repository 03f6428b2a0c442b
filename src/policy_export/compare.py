"""Error statistics between a reference and a candidate output (Polygraphy-style).

A bare pass/fail hides how close a run was to the line; these figures say how much
headroom there is and where the worst element sits, which is what one needs to decide
whether a failure is a real bug or a tolerance that is too tight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from policy_export.errors import ParityError
from policy_export.percentile import percentile

REL_EPS = 1e-6


@dataclass
class ErrorStats:
    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    cosine: float
    worst_index: list[int]
    worst_reference: float
    worst_candidate: float
    #: Smallest absolute tolerance that passes with the given rtol.
    min_passing_atol: float
    atol: float
    rtol: float
    passed: bool
    nonfinite: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float = 0.0) -> ErrorStats:
    """Element-wise comparison; passes iff ``|c - r| <= atol + rtol * |r|`` everywhere."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs candidate {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(cand)))
    diff = np.abs(cand - ref)
    diff = np.where(np.isfinite(diff), diff, np.inf)
    rel = diff / (np.abs(ref) + REL_EPS)
    excess = diff - rtol * np.abs(ref)
    worst = np.unravel_index(int(np.argmax(excess)), ref.shape) if ref.size else ()
    norm = np.linalg.norm(ref) * np.linalg.norm(cand)
    cosine = float(np.dot(ref.ravel(), cand.ravel()) / norm) if norm > 0 and nonfinite == 0 else float("nan")
    min_atol = float(max(0.0, excess.max())) if ref.size else 0.0
    return ErrorStats(
        max_abs=float(diff.max()) if ref.size else 0.0,
        mean_abs=float(diff.mean()) if ref.size else 0.0,
        median_abs=float(np.median(diff)) if ref.size else 0.0,
        p99_abs=percentile(diff, 99) if ref.size else 0.0,
        max_rel=float(rel.max()) if ref.size else 0.0,
        cosine=cosine,
        worst_index=[int(i) for i in worst],
        worst_reference=float(ref[worst]) if ref.size else 0.0,
        worst_candidate=float(cand[worst]) if ref.size else 0.0,
        min_passing_atol=min_atol,
        atol=atol,
        rtol=rtol,
        passed=bool(nonfinite == 0 and min_atol <= atol),
        nonfinite=nonfinite,
    )


def merge_samples(refs: list[np.ndarray], cands: list[np.ndarray], atol: float, rtol: float) -> ErrorStats:
    """Statistics over several samples, with the worst index relative to the stacked samples."""
    return compare(np.stack(refs), np.stack(cands), atol, rtol)


def parity_gate(reference: np.ndarray, candidate: np.ndarray, atol: float, *, what: str, then: str = "") -> ErrorStats:
    """:func:`compare`, raising :class:`ParityError` on a failure: the one post-write gate.

    Every exporter checks its fresh file against what it came from before the file is moved
    into place (and the pipeline checks the in-memory core against LeRobot before any
    export); the message is ``what (max abs error X > atol); then``.
    """
    stats = compare(reference, candidate, atol)
    if not stats.passed:
        raise ParityError(f"{what} (max abs error {stats.max_abs:.3g} > {atol:.3g})" + (f"; {then}" if then else ""))
    return stats
