"""The normalization modes LeRobot's ``NormalizerProcessorStep`` implements, and their statistics.

Plain Python (no torch): the checkpoint loader validates statistics against the same table
the cores normalize with, without importing torch.
"""

from __future__ import annotations

#: Normalization modes LeRobot's ``NormalizerProcessorStep`` implements.
SUPPORTED_NORM_MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10")

#: For the range-based modes, which stats bound the range.
RANGE_STATS = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}

#: The stats each mode reads (IDENTITY reads none).
MODE_STATS = {"MEAN_STD": ("mean", "std"), **RANGE_STATS}
