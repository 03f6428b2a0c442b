"""``policy-export serve``: a real tritonserver under the user command; signals, metrics, bad input.

Signals are sent to a real ``python -m policy_export serve`` subprocess and the test then looks
at the process table and the file system, not at what the command says it did.
"""

from __future__ import annotations

import shutil
import signal
import socket

import numpy as np
import pytest
from fleet_harness import alive, children, serve_process, tag_servers, tritonservers, wait_until
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.runtime.metrics import metric_total, parse_prometheus, render_prometheus, scrape
from policy_export.triton.server import port_in_use


@pytest.fixture(scope="module")
def repo(small_onnx, tmp_path_factory):
    from policy_export.triton.options import TritonOptions
    from policy_export.triton.repo import write_version

    path = tmp_path_factory.mktemp("serve") / "model_repository"
    write_version(small_onnx, path, "act", 1, TritonOptions(max_queue_delay_us=2000))
    return path


@pytest.fixture
def server_tag(monkeypatch):
    """A tag every tritonserver started by this test inherits (see fleet_harness.tritonservers)."""
    return tag_servers(monkeypatch)


@pytest.mark.parametrize(
    "signum",
    # SIGHUP takes the same path as SIGTERM (Terminated); nox -s heavy runs it, for make test's time budget.
    [signal.SIGTERM, signal.SIGINT, pytest.param(signal.SIGHUP, marks=pytest.mark.heavy)],
    ids=lambda s: s.name,
)
def test_signal_takes_the_server_and_its_temp_folder_with_it(repo, signum):
    # SIGINT is sent to a serve started as a shell's background job starts it (SIGINT inherited
    # ignored: what CI's `make test &` did): serve must still stop on it.
    with serve_process(repo, sigint_ignored=signum == signal.SIGINT) as served:
        server_pid, workdir = served.server_pid, served.workdir
        assert workdir is not None and workdir.is_dir() and "policy-export-triton-" in workdir.name
        served.proc.send_signal(signum)
        code = served.proc.wait(timeout=60)
    assert code == 128 + signum, served.output()  # the README's exit-code table: 130 / 143 (129 for SIGHUP)
    assert "stopped" in served.output(), served.output()
    assert wait_until(lambda: not alive(server_pid), 10), f"tritonserver {server_pid} outlived serve ({signum.name})"
    assert not children(served.proc.pid)
    assert not workdir.exists(), f"{workdir} left behind after {signum.name}"
    for port in (served.http_port, served.grpc_port, served.metrics_port):
        assert not port_in_use(port), f"port {port} still held after {signum.name}"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux setpriv not installed")
def test_server_goes_even_when_serve_is_killed_outright(repo):
    """SIGKILL runs no handler: the kernel's parent-death signal stops the server instead."""
    with serve_process(repo) as served:
        server_pid = served.server_pid
        served.proc.kill()
        served.proc.wait(timeout=30)
        assert wait_until(lambda: not alive(server_pid), 30), "tritonserver outlived a SIGKILLed serve"
        # Nothing can remove the temp folder of a SIGKILLed serve (no handler runs): this test made
        # that folder an orphan, so it removes it rather than leave one in /tmp per run.
        if served.workdir is not None:
            shutil.rmtree(served.workdir, ignore_errors=True)


def test_metrics_endpoint_counts_requests_queue_and_compute(repo, small_loaded):
    """Scrape serve's Prometheus endpoint before and after real requests: the counters move."""
    from policy_export.inputs import checkpoint_inputs
    from policy_export.runtime import PolicyClient

    names = (
        "nv_inference_request_success",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    )
    with serve_process(repo) as served:
        before = scrape(served.metrics_url)
        requests = 5
        with PolicyClient.from_triton(served.grpc_url, "act", timeout_s=30) as client:
            feed = checkpoint_inputs(small_loaded, requests, np.random.default_rng(0))
            for i in range(requests):
                client.predict_chunk(
                    {"observation.state": feed["state"][i], "observation.images.top": feed["image"][i]}
                )

        def moved() -> bool:  # Triton updates metrics just after it sends a response: poll, bounded
            now = scrape(served.metrics_url)
            return metric_total(now, names[0], model="act") - metric_total(before, names[0], model="act") >= requests

        assert wait_until(moved, 10), served.output()
        after = scrape(served.metrics_url)
    for name in names:
        delta = metric_total(after, name, model="act", version="1") - metric_total(
            before, name, model="act", version="1"
        )
        assert delta > 0, f"{name} did not move after {requests} requests"
    assert metric_total(after, names[0], model="act") - metric_total(before, names[0], model="act") == requests


def test_busy_port_is_one_line_and_starts_nothing(repo, server_tag):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "--repo", str(repo), "--grpc-port", str(port)])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and f"--grpc-port {port}" in res.output and "in use" in res.output
    assert not tritonservers(server_tag)


def test_repository_failing_the_check_is_one_line(repo, tmp_path):
    import shutil

    bad = tmp_path / "repo"
    shutil.copytree(repo, bad)
    cfg = bad / "act" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size: 8", "max_batch_size: 2", 1))
    res = CliRunner().invoke(app, ["serve", "--repo", str(bad)])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "config.pbtxt" in res.output and "--check" in res.output


def test_missing_server_venv_is_one_line(repo, tmp_path):
    res = CliRunner().invoke(app, ["serve", "--repo", str(repo), "--venv", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "make triton-venv" in res.output, res.output


def test_client_stats_render_as_prometheus_text():
    """Rendered stats parse back to the same values; text states become a state set."""
    stats = {
        "ticks_total": 900,
        "fallback_ticks_total": 3,
        "chunk_latency_ms": {"p50": 12.5, "p99": np.float32(80.25)},
        "queue_depth": 7,
        "connected": True,
        "state": "STREAMING",
        "replica": None,
        "history": [1, 2],
    }
    text = render_prometheus(stats, prefix="pe", labels={"robot": "3", "model": 'a"ct'}, counters=["queue_depth"])
    samples = {s.name: s for s in parse_prometheus(text)}
    assert samples["pe_ticks_total"].value == 900 and samples["pe_fallback_ticks_total"].value == 3
    assert samples["pe_chunk_latency_ms_p50"].value == 12.5 and samples["pe_chunk_latency_ms_p99"].value == 80.25
    assert samples["pe_connected"].value == 1
    assert samples["pe_state"].labels["state"] == "STREAMING" and samples["pe_state"].value == 1
    assert samples["pe_queue_depth"].labels == {"robot": "3", "model": 'a"ct'}
    assert "pe_replica" not in samples and "pe_history" not in samples
    assert "# TYPE pe_ticks_total counter" in text and "# TYPE pe_queue_depth counter" in text
    assert "# TYPE pe_chunk_latency_ms_p99 gauge" in text
    with pytest.raises(ValueError, match="line 1"):
        parse_prometheus("not a metric line at all {")


def test_realtime_client_stats_render_as_prometheus_text(small_onnx):
    """A real RealtimeClient (ONNX Runtime in-process) after a few ticks: its stats() scrape cleanly."""
    from policy_export.fleet.robot import observation
    from policy_export.runtime import PolicyClient
    from policy_export.runtime.metrics import realtime_prometheus
    from policy_export.runtime.realtime import RealtimeClient

    with RealtimeClient(PolicyClient.from_artifact(small_onnx), fps=30, buffer_time_s=0.2) as rt:
        obs = observation(rt.metadata.spec, rt.metadata.image_format, seed=0)
        for _ in range(5):
            rt.select_action(obs)
        stats = rt.stats()
    text = realtime_prometheus(stats, labels={"robot": "0"})
    samples = {(s.name, s.labels.get("state")): s for s in parse_prometheus(text)}
    assert samples[("policy_export_realtime_steps", None)].value == 5
    assert samples[("policy_export_realtime_chunks_received", None)].value == stats["chunks_received"] >= 1
    assert samples[("policy_export_realtime_state", stats["state"])].value == 1
    assert ("policy_export_realtime_time_in_state_s_STREAMING", None) in samples
    assert "# TYPE policy_export_realtime_fallback_ticks counter" in text
    assert "last_error" not in text


def test_bench_triton_bad_input_is_one_line(tmp_path, small_onnx):
    """The Typer command that replaced ``python -m policy_export.triton.latency``."""
    res = CliRunner().invoke(app, ["bench-triton", "-a", str(small_onnx), "--requests", "0"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--requests" in res.output, res.output
    res = CliRunner().invoke(app, ["bench-triton", "-a", str(small_onnx), "--venv", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "make triton-venv" in res.output, res.output
