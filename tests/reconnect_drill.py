"""Reconnect drill, run as its own process so that its stderr is exactly what a robot process prints.

A RealtimeClient with its default reconnect settings streams from a real tritonserver at ``--fps``;
the server is SIGKILLed, stays away ``--down-s`` seconds (long enough for the backoff to grow), and
is started again on the same ports. Printed on stdout, one JSON object: ``back_s``, the seconds
from the restarted server being ready (``TritonServer.start`` returned: its health endpoint said
ready, polled every 0.1 s) to the first tick that runs an action of a chunk asked for after the
kill, plus the client's counters. The test (test_realtime_drills.py) reads stdout and checks
stderr for tracebacks from library threads (gRPC's connectivity poller printed one).

    python tests/reconnect_drill.py --repo REPO --server-venv .venv-triton [--down-s 6] [--fps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from policy_export.runtime import RealtimeClient, State
from policy_export.triton.install import find_server
from policy_export.triton.server import TritonServer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--server-venv", type=Path, required=True)
    ap.add_argument("--down-s", type=float, default=6.0)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--max-s", type=float, default=90.0)
    args = ap.parse_args()

    install = find_server(args.server_venv)
    servers: list[TritonServer] = []
    first = TritonServer(repo=args.repo, install=install, startup_timeout_s=120.0)
    servers.append(first)
    first.start()
    streaming, stop = threading.Event(), threading.Event()
    marks: dict[str, float] = {}
    failure: list[str] = []

    def chaos() -> None:
        """Kill the server once the client streams; restart it --down-s later on the same ports."""
        try:
            if not streaming.wait(60.0):
                return
            marks["killed"] = time.monotonic()
            os.killpg(first._proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
            first._proc.wait(timeout=30)  # type: ignore[union-attr]
            if stop.wait(args.down_s):
                return
            again = TritonServer(
                repo=args.repo,
                install=install,
                startup_timeout_s=120.0,
                http_port=first.http_port,
                grpc_port=first.grpc_port,
            )
            servers.append(again)
            again.start()
            marks["ready"] = time.monotonic()
        except Exception as exc:  # reported in the JSON, not as a traceback
            failure.append(f"{type(exc).__name__}: {exc}")

    rt = RealtimeClient.from_triton(first.grpc_url, "act", fps=args.fps, timeout_s=1.0)
    spec = rt.metadata.spec
    rng = np.random.default_rng(0)
    c, h, w = spec.cameras[0].shape
    frames = [rng.integers(0, 256, (h, w, c), dtype=np.uint8) for _ in range(4)]
    thread = threading.Thread(target=chaos, name="drill-chaos", daemon=True)
    thread.start()
    result: dict[str, object] = {}
    try:
        period = 1.0 / args.fps
        start = next_tick = time.monotonic()
        step, killed_step = 0, None
        while time.monotonic() - start < args.max_s and not failure:
            obs = {spec.state_key: np.zeros(spec.state_dim, np.float32), spec.cameras[0].key: frames[step % 4]}
            rt.select_action(obs)
            tick = rt.last_tick
            assert tick is not None
            if rt.state is State.STREAMING and step >= 10:
                streaming.set()
            if killed_step is None and "killed" in marks:
                killed_step = step
            if "ready" in marks and killed_step is not None and tick.chunk is not None and tick.chunk > killed_step:
                result["back_s"] = time.monotonic() - marks["ready"]
                result["down_s"] = marks["ready"] - marks["killed"]
                break
            step += 1
            next_tick += period
            pause = next_tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the loop's own pacing, as a robot loop does
        stats = rt.stats()
        result.update(
            {k: stats[k] for k in ("state", "reconnects", "failures", "fallback_ticks", "chunks_received")},
            steps=step,
            error=failure[0] if failure else None,
        )
    finally:
        stop.set()
        rt.close()
        thread.join(150.0)
        for server in servers:
            server.stop(timeout_s=10.0)
            server.cleanup()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
