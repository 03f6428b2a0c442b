"""The rolling-upgrade drill: robots at 30 Hz on two replicas loading from object storage, v1 -> v2.

Steps: publish v1 to ``s3://BUCKET/models`` (the endpoint given: moto on loopback in tests and
in ``nox -s fleet_s3``), start two tritonservers on it in explicit model control mode, publish
v2, start the robots (some following the newest version, some pinned to v1), and while they run
roll v2 out with :func:`policy_export.fleet.upgrade.upgrade`.

Each robot's reference chunks (what v1 and what v2 must answer for its observation) are
computed from the artifacts themselves with ONNX Runtime, apart from the servers, so a chunk
from the wrong model cannot pass for the right one.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

MODEL = "act"


def reference_chunks(artifacts: dict[str, Path], seed: int) -> dict[str, Any]:
    """Version -> the action chunk that version computes for robot ``seed``'s observation (ONNX Runtime)."""
    from policy_export.fleet.robot import observation
    from policy_export.runtime import PolicyClient

    out = {}
    for version, path in artifacts.items():
        with PolicyClient.from_artifact(path) as client:
            obs = observation(client.metadata.spec, client.metadata.image_format, seed)
            out[version] = client.backend.infer(client.adapter(obs).feed())
    return out


def run_drill(
    endpoint: str,
    bucket: str,
    v1: Path,
    v2: Path,
    *,
    robots: int = 4,
    pinned: int = 1,
    duration_s: float = 12.0,
    fps: float = 30.0,
    start_after_s: float = 1.0,
    roll_out: bool = True,
) -> dict[str, Any]:
    """Run the drill; the returned row has bench-fleet's counts plus the upgrade's timings.

    The last ``pinned`` robots pin version 1, the others follow the newest. The environment must
    hold the (dummy) AWS credentials the endpoint accepts; the bucket must exist. ``roll_out=False``
    runs the same robots on the same servers without the upgrade: the baseline that tells the
    rollout's fallback ticks from the machine's.
    """
    from policy_export.fleet.bench import FleetConfig, measure_row
    from policy_export.fleet.upgrade import read_repo_model, upgrade
    from policy_export.triton.s3 import S3Location, write_version_s3
    from policy_export.triton.server import TritonServer

    repo = f"s3://{bucket}/models"
    loc = S3Location.parse(repo, endpoint)
    write_version_s3(v1, loc, MODEL, 1, {"backend": "python"})
    extra = ("--model-control-mode=explicit", f"--load-model={MODEL}")
    servers = [TritonServer(repo=loc.triton_url(), startup_timeout_s=180, extra_args=extra) for _ in range(2)]
    timeline: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for srv in servers:
            stack.enter_context(srv)
            stack.callback(srv.cleanup)
        write_version_s3(v2, loc, MODEL, 2)
        urls = tuple(s.grpc_url for s in servers)
        cfg = FleetConfig(model=MODEL, robots=(robots,), fps=fps, duration_s=duration_s, urls=urls, timeout_s=3)
        refs = {i: reference_chunks({"1": v1, "2": v2}, cfg.seed * 1000 + i) for i in range(robots)}

        def per_robot(i: int) -> dict[str, Any]:
            return {"version": "1" if i >= robots - pinned else "latest", "references": refs[i]}

        def roll() -> None:
            if not roll_out:
                timeline["steps"] = []
                return
            time.sleep(start_after_s)  # a moment of steady state on v1 before the rollout (not a synchronisation)
            t0 = time.monotonic()
            steps = upgrade(list(urls), MODEL, 2, read_repo_model(repo, MODEL, endpoint))
            timeline["upgrade_s"] = time.monotonic() - t0
            timeline["steps"] = [vars(s) for s in steps]

        row = measure_row(robots, urls, cfg, True, False, roll, None, per_robot)
    row.update(timeline)
    row["pinned_robots"] = pinned
    return row
