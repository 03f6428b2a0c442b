"""``policy-export bench-fleet`` against a real tritonserver: tiny runs, bad input, a replica drill.

Figures are not asserted (a benchmark measures; the lead runs it on a quiet machine). What is
asserted is that the run measured what it says: the server's own counters saw exactly the
requests the robots sent, batching off executes one request at a time, a killed replica's
robots carry on on the other with no action from another model, and no run leaves a server
process behind.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from fleet_harness import alive, children, serve_process, tag_servers, tritonservers, wait_until
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.runtime.metrics import metric_total, scrape
from policy_export.triton.server import free_port


@pytest.fixture(scope="module")
def repo(small_onnx, tmp_path_factory):
    from policy_export.triton.config import TritonOptions
    from policy_export.triton.repo import write_version

    path = tmp_path_factory.mktemp("fleet") / "model_repository"
    write_version(small_onnx, path, "act", 1, TritonOptions(max_queue_delay_us=2000))
    return path


@pytest.fixture
def server_tag(monkeypatch):
    """A tag every tritonserver started by this test inherits (see fleet_harness.tritonservers)."""
    return tag_servers(monkeypatch)


def _one_error_line(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1, res.output
    for needle in needles:
        assert needle in res.output, res.output


@pytest.mark.parametrize("robots", ["0,2", "a,b", "-1", "", "1.5"])
def test_robot_counts_that_are_not_positive_integers(repo, robots, server_tag):
    res = CliRunner().invoke(app, ["bench-fleet", "--repo", str(repo), "--model", "act", "--robots", robots])
    _one_error_line(res, "--robots", "positive integers")
    assert not tritonservers(server_tag)


def test_model_not_in_repository(repo, server_tag):
    res = CliRunner().invoke(app, ["bench-fleet", "--repo", str(repo), "--model", "nope", "--robots", "1"])
    _one_error_line(res, "no model 'nope'", "act")
    assert not tritonservers(server_tag)


def test_url_nobody_answers(server_tag):
    url = f"127.0.0.1:{free_port()}"
    res = CliRunner().invoke(
        app, ["bench-fleet", "--triton-url", url, "--model", "act", "--robots", "1", "--timeout", "2"]
    )
    _one_error_line(res, f"--triton-url {url}")
    assert not tritonservers(server_tag)


@pytest.mark.heavy  # make test's time budget (~17 s on a 2-core AVX2 machine); nox -s heavy runs it (the replica-kill run covers bench-fleet end to end)
def test_tiny_run_measures_what_the_server_saw(repo, tmp_path, server_tag):
    """--robots 1,2 --duration 2, batching on and off: rows, summary, JSON and PNG; counters agree."""
    out, png = tmp_path / "fleet.json", tmp_path / "fleet.png"
    args = ["bench-fleet", "--repo", str(repo), "--model", "act", "--robots", "1,2", "--duration", "2"]
    res = CliRunner().invoke(app, [*args, "--json", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "rule of thumb" in res.output and "limited by" in res.output
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["robots"], r["batching"]) for r in rows] == [(1, True), (2, True), (1, False), (2, False)]
    for r in rows:
        # n_action_steps 10 at 30 Hz: about 3 chunk requests per robot-second (+1 for the first chunk).
        assert r["requests"] >= r["robots"] * 2, r
        # The server's own count of this run's requests; at most one per robot may differ: a
        # RealtimeClient request cut off by close() at the end can still complete on the server.
        assert abs(r["server_requests"] - r["requests"]) <= r["robots"], "Triton's statistics disagree with the robots'"
        assert r["ticks"] == r["robots"] * 60
        assert r["fallback_ticks"] >= r["missed_ticks"] >= 0
        assert r["wrong_model_chunks"] == 0 and r["failovers"] == 0
        assert r["server_compute_ms_per_request"] > 0 and r["chunk_p99_ms"] >= r["chunk_p50_ms"] > 0
        if not r["batching"]:
            assert r["avg_batch_size"] == 1.0 and r["server_executions"] == r["server_requests"]
            # One request per execution: the per-execution (batch_stats) and per-request sums agree.
            assert r["server_compute_ms_per_execution"] == pytest.approx(r["server_compute_ms_per_request"], rel=0.02)
    assert {s["batching"] for s in report["summary"]} == {True, False}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not tritonservers(server_tag), "bench-fleet left a tritonserver behind"


@pytest.mark.heavy  # make test's time budget (~9 s on a 2-core AVX2 machine); nox -s heavy runs it
def test_sweep_is_unpaced_and_batching_off_runs_one_request_per_execution(repo, tmp_path):
    out = tmp_path / "sweep.json"
    args = ["bench-fleet", "--repo", str(repo), "--model", "act", "--sweep", "1,3", "--duration", "2"]
    res = CliRunner().invoke(app, [*args, "--batching", "off", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["robots"] for r in rows] == [1, 3] and all(r["mode"] == "sweep" for r in rows)
    for r in rows:
        # Unpaced: far more than the 3/s a 30 Hz robot with n_action_steps 10 would ask for.
        assert r["request_rate_per_robot_hz"] > 3, r
        assert r["server_requests"] == r["requests"] and r["avg_batch_size"] == 1.0


@pytest.mark.parametrize(
    "realtime",
    [
        True,
        pytest.param(False, marks=pytest.mark.heavy),
    ],  # sync: make test's time budget (~16 s on a 2-core AVX2 machine); nox -s heavy runs it
    ids=["realtime", "sync"],
)
def test_killing_a_replica_moves_its_robots_to_the_other_without_a_wrong_model_action(
    repo, small_fp16_onnx, tmp_path, realtime
):
    """Two serve processes; robots spread over them; replica A is SIGTERMed mid-run.

    A's robots must carry on against B (failover through the replica list), every chunk any
    robot received must be the model's (same observation -> same chunk), and a third server
    serving a different model under the same name is refused up front.
    """
    from policy_export.errors import BadInputError
    from policy_export.fleet.bench import FleetConfig, run_fleet
    from policy_export.fleet.servers import check_replicas
    from policy_export.triton.config import TritonOptions
    from policy_export.triton.repo import write_version

    with serve_process(repo) as a, serve_process(repo) as b:
        killed = {}

        def kill_a(n: int, urls: tuple[str, ...]) -> None:
            # Mid-run: once A has answered a robot's requests (bounded), stop it as a supervisor would.
            base = metric_total(scrape(a.metrics_url), "nv_inference_request_success", model="act")
            wait_until(lambda: metric_total(scrape(a.metrics_url), "nv_inference_request_success") >= base + 2, 10)
            a.proc.send_signal(signal.SIGTERM)
            killed["pid"] = a.server_pid

        urls = (a.grpc_url, b.grpc_url)
        cfg = FleetConfig(model="act", robots=(4,), fps=30, duration_s=4, urls=urls, timeout_s=3, realtime=realtime)
        report = run_fleet(cfg, during=kill_a)
        # serve exits 128 + SIGTERM after a clean stop (the exit-code table).
        assert a.proc.wait(timeout=30) == 128 + signal.SIGTERM and not alive(killed["pid"])
        (row,) = report["rows"]
        on_a = [r for r in row["per_robot"] if r["replicas_used"][0] == a.grpc_url]
        assert on_a, "no robot started on replica A"
        for r in on_a:
            assert r["failovers"] >= 1 and r["replicas_used"][-1] == b.grpc_url, r
            # Recovered, not just switched: B answered this robot after A went away. (How many ticks the
            # switch costs depends on the machine's load: bench-fleet reports it, a test does not time it.)
            assert r["answered_by"].get(b.grpc_url, 0) >= 1, r
        assert row["wrong_model_chunks"] == 0 and row["refused_replicas"] == 0
        assert row["ticks"] == 4 * 120
        assert row["fallback_ticks"] < row["ticks"], row  # the run did not end in fallback from its first tick

        if not realtime:
            return  # the checks below are the same for both clients
        res = CliRunner().invoke(app, ["bench-fleet", "--triton-url", b.grpc_url, "--model", "nope", "--robots", "1"])
        _one_error_line(res, f"--triton-url {b.grpc_url}", "'nope'")
        other = tmp_path / "other"
        write_version(small_fp16_onnx, other, "act", 1, TritonOptions())
        with serve_process(other) as c, pytest.raises(BadInputError, match="serves a different 'act'"):
            check_replicas((b.grpc_url, c.grpc_url), "act", 5)


def test_no_orphan_when_bench_fleet_is_terminated(repo, tmp_path, server_tag):
    """SIGTERM to a running bench-fleet: its server and temp folders go with it."""
    import os
    import subprocess
    import sys

    from triton_harness import SERVER_VENV

    env = {**os.environ, "POLICY_EXPORT_TRITON_VENV": str(SERVER_VENV)}
    cmd = [sys.executable, "-m", "policy_export", "bench-fleet", "--repo", str(repo), "--model", "act"]
    proc = subprocess.Popen([*cmd, "--robots", "1", "--duration", "60"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        servers: list[int] = []

        def started() -> bool:
            servers[:] = [p for p in children(proc.pid) if p in tritonservers(server_tag)]
            return bool(servers)

        assert wait_until(started, 120), "bench-fleet never started its server"
        workdir = Path(os.readlink(f"/proc/{servers[0]}/cwd"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert wait_until(lambda: not tritonservers(server_tag), 10), "tritonserver outlived bench-fleet"
    assert not workdir.exists()
