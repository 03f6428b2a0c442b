"""Triton's own load generator, ``perf_analyzer``, run against a ``serve`` process.

Why this tool too: our ``bench-fleet --sweep`` measures throughput against concurrency with our
own client; ``perf_analyzer`` is what Triton users trust for the same curve. Both on the same
server, same inputs, tell whether our client adds overhead (and how much).

Getting it on these machines (see ``nox -s fleet``, which does all of it): the pip
``perf-analyzer`` wheels need glibc 2.38 (Debian 12 has 2.36); the binary bundled in
``tritonclient==2.41.0``'s wheel runs once Debian's ``libb64-0d`` and pip's
``nvidia-cuda-runtime-cu12`` (``libcudart.so.12``, on ``LD_LIBRARY_PATH``) are there. Both
wheels are installed ``--no-deps --target`` a tools folder, outside every venv: 2.41 pins
older numpy/protobuf than ours.

Inputs come from the checkpoint's statistics (``--input-data``, base64 float32), not zeros:
the same kind of data the parity checks feed.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.errors import BadInputError, UnavailableError

TOOLS_ENV = "POLICY_EXPORT_PERF_TOOLS"
INSTALL_HINT = (
    "install it with `nox -s fleet` (or: apt-get update && apt-get install libb64-0d; "
    "pip install --no-deps --target DIR tritonclient==2.41.0 nvidia-cuda-runtime-cu12; "
    f"then {TOOLS_ENV}=DIR)"
)


def find_perf_analyzer(tools: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The binary and the environment it needs (``LD_LIBRARY_PATH`` with libcudart.so.12)."""
    tools = tools or Path(os.environ.get(TOOLS_ENV, ".perf-tools"))
    binary = tools / "bin" / "perf_analyzer"
    if not binary.exists():
        raise UnavailableError(f"{binary}: perf_analyzer not found; {INSTALL_HINT}")
    env = dict(os.environ)
    libs = [str(tools / "nvidia" / "cuda_runtime" / "lib")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    probe = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, timeout=30)
    if "error while loading shared libraries" in probe.stderr:
        raise UnavailableError(f"{binary}: {probe.stderr.strip().splitlines()[0]}; {INSTALL_HINT}")
    return binary, env


def input_data(samples: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """perf_analyzer's ``--input-data`` JSON: one entry per sample, tensors without the batch axis,
    as base64 bytes (a camera frame as a JSON number list would be megabytes of text)."""
    data = []
    for feed in samples:
        entry = {}
        for name, arr in feed.items():
            if arr.shape[0] != 1:
                raise BadInputError(f"input_data takes batch-1 samples; {name} has batch {arr.shape[0]}")
            one = np.ascontiguousarray(arr[0])
            entry[name] = {"b64": base64.b64encode(one.tobytes()).decode("ascii"), "shape": list(one.shape)}
        data.append(entry)
    return {"data": data}


def run_perf_analyzer(
    binary: Path,
    env: dict[str, str],
    url: str,
    model: str,
    concurrency: tuple[int, int],
    data_json: Path,
    csv_path: Path,
    measurement_interval_ms: int = 5000,
    stability_percent: float = 10.0,
    timeout_s: float = 1800,
) -> list[dict[str, float]]:
    """gRPC, concurrency ``lo:hi`` step 1, p99 as the stability percentile; rows of the CSV.

    ``stability_percent`` is perf_analyzer's ``-s`` (default 10): three windows in a row within
    that much of each other count as stable. A shared machine may never get there; a quick
    check of the recipe can loosen it, figures worth keeping should not.
    """
    lo, hi = concurrency
    cmd = [
        str(binary),
        "-m",
        model,
        "-i",
        "grpc",
        "-u",
        url,
        "--concurrency-range",
        f"{lo}:{hi}:1",
        "--input-data",
        str(data_json),
        "--percentile",
        "99",
        "--measurement-interval",
        str(measurement_interval_ms),
        "-s",
        f"{stability_percent:g}",
        "-f",
        str(csv_path),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise UnavailableError(f"perf_analyzer failed (exit {out.returncode}): {' | '.join(tail)}")
    return read_csv(csv_path)


def read_csv(path: Path) -> list[dict[str, float]]:
    """perf_analyzer's CSV: concurrency, inferences/s and latencies (microseconds) per row."""
    rows = []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            rows.append({k.strip(): float(v) for k, v in rec.items() if k and v not in (None, "")})
    return rows


def write_input_data(path: Path, samples: list[dict[str, np.ndarray]]) -> None:
    from policy_export.fsutil import write_text_atomic

    write_text_atomic(path, json.dumps(input_data(samples)))
