"""The rolling-upgrade drill with its baseline, back to back: the same 4 robots on the same kind of servers
without the upgrade, then with it, so the upgrade's own fallback ticks can be told from the machine's.

    python benchmarks/fleet_upgrade.py --artifact small.onnx --out reports/fleet_s3/baseline-vs-upgrade.json

Starts moto_server on loopback (dummy credentials), two buckets, two pairs of tritonservers (one per run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    from s3_harness import moto_s3, s3_env

    from policy_export.fleet.upgrade_drill import run_drill

    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", type=Path, required=True, help="v1 ONNX (v2 = v1 with its action head's bias moved)")
    ap.add_argument("--duration", type=float, default=45.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import boto3
    import numpy as np
    import onnx
    from onnx import numpy_helper

    os.environ.update({k: v for k, v in s3_env().items() if k.startswith("AWS_")})
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(args.artifact))
        for init in model.graph.initializer:
            if init.name == "action_head.bias":
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.5), init.name))
        v2 = Path(tmp) / "v2.onnx"
        onnx.save(model, str(v2))
        rows = {}
        with moto_s3() as endpoint:
            s3 = boto3.client("s3", endpoint_url=endpoint)
            for label, roll in (("baseline", False), ("upgrade", True)):
                s3.create_bucket(Bucket=label)
                row = run_drill(endpoint, label, args.artifact, v2, duration_s=args.duration, roll_out=roll)
                rows[label] = row
                keys = ("ticks", "missed_ticks", "fallback_ticks", "wrong_model_chunks", "chunk_p50_ms", "chunk_p99_ms")
                print(label, {k: row[k] for k in keys}, [r["fallback_ticks"] for r in row["per_robot"]], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2, default=str))
    print(f"wrote {args.out}; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
