"""The one percentile definition every report uses (latency tables, the shim bench, parity statistics).

Linear interpolation between the closest ranks (numpy's default), so a p90 from ``bench``,
``bench-shim`` and the Triton latency tool mean the same thing and can be set side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``; NaN when there are none (a row with no samples)."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
