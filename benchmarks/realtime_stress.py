"""What keeps a 30 Hz RealtimeClient loop on time with the cores oversubscribed (BENCHMARKS.md,
"under contention"): each choice in a process of its own, N busy processes beside the loop.

    python benchmarks/realtime_stress.py --artifact reports/realtime/act_demo.onnx --stress 4 --steps 600 \
        --rounds 2 --out reports/realtime/stress.jsonl

Choices: ``base`` (ONNX Runtime as the runners open it: intra-op threads = cores, no spinning),
``spin`` (ORT's intra-op threads spin), ``t1`` (one intra-op thread), ``nice`` (every thread but
the control thread at nice 10: the worker and ORT's pool), ``fifo`` (the control thread SCHED_FIFO,
what ``control_priority="auto"`` now does for a local core), ``fifo-t1``. One JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

CHOICES = ("base", "spin", "t1", "nice", "fifo", "fifo-t1")


def one(artifact: Path, choice: str, stress: int, steps: int, fps: float) -> dict[str, object]:
    from policy_export.bench.realtime import ToyRobot, busy_processes, control_loop
    from policy_export.percentile import percentile
    from policy_export.runtime import PolicyClient, RealtimeClient

    if "spin" in choice:
        os.environ["POLICY_EXPORT_ORT_SPIN"] = "1"
    client = PolicyClient.from_artifact(artifact, threads=1 if "t1" in choice else None)
    priority = "fifo" if "fifo" in choice else "none"
    with RealtimeClient(client, fps, control_priority=priority) as rt:
        robot = ToyRobot(rt.metadata.spec, 0)
        rt.select_action(robot.observe())
        if choice == "nice":
            control = threading.get_native_id()
            for tid in os.listdir("/proc/self/task"):
                if int(tid) != control:
                    os.setpriority(os.PRIO_PROCESS, int(tid), 10)
        before = rt.stats()
        with busy_processes(stress, max_s=4 * steps / fps + 120):
            select_ms, missed = control_loop(rt.select_action, robot, fps, steps)
        stats = rt.stats()
    return {
        "choice": choice,
        "stress": stress,
        "steps": steps,
        "missed_ticks": missed,
        "select_ms_p50": percentile(select_ms, 50),
        "select_ms_p99": percentile(select_ms, 99),
        "select_ms_max": max(select_ms),
        "chunk_ms_p50": stats["chunk_ms_p50"],
        "chunk_ms_p99": stats["chunk_ms_p99"],
        "fallback_ticks": stats["fallback_ticks"] - before["fallback_ticks"],
        "load": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--stress", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--choices", default=",".join(CHOICES))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.artifact, a.one, a.stress, a.steps, a.fps)))
        return 0
    lines = []
    for _ in range(a.rounds):  # interleaved, so that a change of load hits every choice alike
        for choice in a.choices.split(","):
            cmd = [sys.executable, __file__, "--artifact", str(a.artifact), "--one", choice]
            cmd += ["--stress", str(a.stress), "--steps", str(a.steps), "--fps", str(a.fps)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
            lines.append(out.strip().splitlines()[-1])
            print(lines[-1], flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
