"""Measure a real Triton server: start-up time and single-request latency, per artifact.

A benchmark, not a test: it prints a table and writes JSON, and asserts nothing about speed.
Each artifact is written into a fresh repository with the default ``triton-repo`` options
(what a user gets), served by the nvidia-pytriton ``tritonserver`` on loopback, and hit with
sequential batch-1 requests over HTTP and gRPC. The same request through an in-process ONNX
Runtime session is timed too, so the server's own overhead is visible; the three are
interleaved request by request so that other load on the machine affects them alike.

    policy-export bench-triton --artifact policy.onnx --requests 50 --json triton-latency.json
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.percentile import percentile
from policy_export.triton.install import find_server
from policy_export.triton.options import TritonOptions
from policy_export.triton.repo import write_version
from policy_export.triton.server import TritonServer

if TYPE_CHECKING:
    from rich.table import Table


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in samples]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
    }


def _time_interleaved(calls: dict[str, Any], requests: int, warmup: int = 5) -> dict[str, dict[str, float]]:
    """Round-robin over the calls, so load from other processes hits every column alike."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(requests):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: _percentiles(s) for name, s in samples.items()}


def _feed(artifact: Path) -> dict[str, np.ndarray]:
    from policy_export.artifacts import inspect_artifact
    from policy_export.inputs import random_inputs

    meta = inspect_artifact(artifact).metadata
    return random_inputs(meta.spec, 1, np.random.default_rng(0), image_format=meta.image_format)


def _client_call(protocol: str, url: str, model: str, feed: dict[str, np.ndarray]) -> tuple[Any, Any]:
    from tritonclient.utils import np_to_triton_dtype

    if protocol == "http":
        import tritonclient.http as tc

        client = tc.InferenceServerClient(url, network_timeout=60.0)
    else:
        import tritonclient.grpc as tc

        client = tc.InferenceServerClient(url)
    inputs = []
    for name, arr in feed.items():
        if arr.ndim == 1:  # a per-robot scalar (rtc_prev_len / rtc_delay) travels as [B, 1] (triton_contract.wire_dims)
            arr = arr.reshape(-1, 1)
        inp = tc.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    outputs = [tc.InferRequestedOutput("action_chunk")]
    return client, lambda: client.infer(model, inputs, outputs=outputs)


def _ort_call(artifact: Path, feed: dict[str, np.ndarray]) -> Any:
    import onnxruntime as ort

    from policy_export.runners.onnxrt import session_options

    sess = ort.InferenceSession(str(artifact), sess_options=session_options(), providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feed)


def measure(artifacts: list[Path], backend: str = "auto", requests: int = 50, venv: Path | None = None) -> list[dict]:
    install = find_server(venv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="policy-export-latency-") as tmp:
        repo = Path(tmp) / "repo"
        names = {}
        for i, artifact in enumerate(artifacts):
            names[artifact] = f"m{i}"
            write_version(artifact, repo, names[artifact], 1, TritonOptions(backend=backend))
        server = TritonServer(repo=repo, install=install)
        try:
            with server:
                for artifact in artifacts:
                    feed = _feed(artifact)
                    row: dict[str, Any] = {
                        "artifact": str(artifact),
                        "backend": backend,
                        "request_bytes": int(sum(a.nbytes for a in feed.values())),
                        "server_start_s": server.startup_seconds,
                        "models_in_repository": len(artifacts),
                        "requests": requests,
                    }
                    clients, calls = [], {}
                    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                        client, calls[protocol] = _client_call(protocol, url, names[artifact], feed)
                        clients.append(client)
                    if artifact.suffix == ".onnx":
                        calls["onnxruntime_in_process"] = _ort_call(artifact, feed)
                    try:
                        row.update(_time_interleaved(calls, requests))
                    finally:
                        for client in clients:
                            client.close()
                    rows.append(row)
        finally:
            server.cleanup()
    return rows


def render_table(rows: list[dict]) -> Table:
    from rich.table import Table

    table = Table(title="Triton (nvidia-pytriton tritonserver, CPU, loopback): batch-1 request latency")
    for col in ("artifact", "backend", "request", "server start", "HTTP p50/p90", "gRPC p50/p90", "ORT in-process p50"):
        table.add_column(col)
    for r in rows:
        ort = r.get("onnxruntime_in_process")
        table.add_row(
            Path(r["artifact"]).name,
            r["backend"],
            f"{r['request_bytes'] / 1e6:.2f} MB",
            f"{r['server_start_s']:.2f} s ({r['models_in_repository']} model(s))",
            f"{r['http']['p50_ms']:.2f} / {r['http']['p90_ms']:.2f} ms",
            f"{r['grpc']['p50_ms']:.2f} / {r['grpc']['p90_ms']:.2f} ms",
            f"{ort['p50_ms']:.2f} ms" if ort else "-",
        )
    return table
