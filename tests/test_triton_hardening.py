"""triton-repo under concurrent writers, and what --check (and every write) must catch before a server does.

Concurrency is tested with real parallel ``policy-export triton-repo`` processes. To make
them overlap deterministically (not by luck of timing), the test holds the model's lock
first, waits until both writers report that they are waiting on it, then releases it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.triton.lock import lock_path
from policy_export.triton.repo import write_version
from policy_export.triton.validate import check_repository

runner = CliRunner()
EXE = str(Path(sys.executable).with_name("policy-export"))


def one_line(output: str) -> str:
    return " ".join(output.split())


def read_config(model_dir: Path) -> pb.ModelConfig:
    cfg = pb.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), cfg)
    return cfg


def start_writer(artifact: Path, repo: Path, version: int, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [EXE, "triton-repo", "-a", str(artifact), "--repo", str(repo), "--model", "act", "--version", str(version)]
    return subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)


def wait_until(predicate, procs: list[subprocess.Popen], deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if any(p.poll() is not None for p in procs):
            raise AssertionError("a writer finished without waiting for the lock")
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            raise AssertionError("writers never reported waiting for the lock")
        time.sleep(0.05)


def finish(procs: list[subprocess.Popen]) -> list[int]:
    return [p.wait(timeout=300) for p in procs]


class HeldLock:
    """The model's lock, held by this test process as another writer would hold it."""

    def __init__(self, repo: Path, name: str = "act") -> None:
        self.fd = os.open(lock_path(repo, name), os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        os.close(self.fd)


@pytest.fixture
def repo_v1(small_onnx, tmp_path) -> Path:
    repo = tmp_path / "repo"
    write_version(small_onnx, repo, "act", 1, {"version_policy": "all"})
    return repo


def test_concurrent_writers_of_different_versions_both_land(small_onnx, repo_v1, tmp_path):
    held = HeldLock(repo_v1)
    logs = [tmp_path / "w2.log", tmp_path / "w3.log"]
    procs = [start_writer(small_onnx, repo_v1, v, log) for v, log in zip((2, 3), logs, strict=True)]
    try:
        wait_until(lambda: all("waiting for another triton-repo write" in log.read_text() for log in logs), procs)
    finally:
        held.release()
    codes = finish(procs)
    assert codes == [0, 0], [log.read_text() for log in logs]
    model = repo_v1 / "act"
    assert sorted(p.name for p in model.iterdir() if p.is_dir()) == ["1", "2", "3"]
    params = {k: v.string_value for k, v in read_config(model).parameters.items()}
    assert params["versions"] == "1,2,3"
    assert all(r.ok for r in check_repository(repo_v1))


def test_concurrent_writers_of_the_same_version_exactly_one_wins(small_onnx, repo_v1, tmp_path):
    held = HeldLock(repo_v1)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_writer(small_onnx, repo_v1, 2, log) for log in logs]
    try:
        wait_until(lambda: all("waiting for another" in log.read_text() for log in logs), procs)
    finally:
        held.release()
    codes = finish(procs)
    assert sorted(codes) == [0, 2], [log.read_text() for log in logs]
    loser = logs[codes.index(2)].read_text()
    assert "version 2 of act exists; pass --force to replace it" in one_line(loser) and "Traceback" not in loser
    assert all(r.ok for r in check_repository(repo_v1))


@pytest.mark.fleet  # racing writers, ~6 s on 2 AVX2 cores: nox -s fleet_s3 (the locked writers stay in make test)
def test_unsynchronised_parallel_writers_lose_nothing(small_onnx, repo_v1, tmp_path):
    procs = [start_writer(small_onnx, repo_v1, v, tmp_path / f"{v}.log") for v in (2, 3, 4)]
    assert finish(procs) == [0, 0, 0], [(tmp_path / f"{v}.log").read_text() for v in (2, 3, 4)]
    assert sorted(p.name for p in (repo_v1 / "act").iterdir() if p.is_dir()) == ["1", "2", "3", "4"]
    assert all(r.ok for r in check_repository(repo_v1))


def test_a_busy_model_fails_clearly_after_the_wait(small_onnx, repo_v1):
    held = HeldLock(repo_v1)
    try:
        res = runner.invoke(
            app,
            [
                str(a)
                for a in (
                    "triton-repo",
                    "-a",
                    small_onnx,
                    "--repo",
                    repo_v1,
                    "--model",
                    "act",
                    "--version",
                    2,
                    "--lock-wait",
                    0,
                )
            ],
        )
    finally:
        held.release()
    assert res.exit_code == 2 and "still holds .act.lock" in one_line(res.output), res.output
    assert not (repo_v1 / "act" / "2").exists()
    assert check_repository(repo_v1)[0].ok  # the lock file is not a model


def test_options_beyond_the_config_fields_are_one_line(small_onnx, tmp_path):
    repo = tmp_path / "repo"
    cases = {
        "--max-batch-size": (str(2**31), "max_batch_size is an int32"),
        "--max-queue-delay-us": (str(2**64), "uint64"),
        "--instance-count": (str(2**31), "int32"),
        "--version": (str(2**63), "int64"),
        "--version-policy": (f"specific:1,{2**63}", "--version-policy"),
    }
    for flag, (value, message) in cases.items():
        res = runner.invoke(
            app, ["triton-repo", "-a", str(small_onnx), "--repo", str(repo), "--model", "a", flag, value]
        )
        assert res.exit_code == 2, (flag, res.output)
        assert message in one_line(res.output) and "Traceback" not in res.output, (flag, res.output)
        assert len(res.output.strip().splitlines()) == 1 or res.output.count("error:") == 1, res.output
    assert not repo.exists()
    res = runner.invoke(
        app,
        ["triton-repo", "-a", str(small_onnx), "--repo", str(repo), "--model", "a", "--version", str(2**63 - 1)],
    )
    assert res.exit_code == 0, res.output  # the largest version Triton parses is fine


def test_check_catches_a_version_beyond_int64(repo_v1):
    model = repo_v1 / "act"
    (model / "1").rename(model / str(2**63))
    res = runner.invoke(app, ["triton-repo", "--check", str(repo_v1)])
    assert res.exit_code == 2 and "the largest version Triton parses" in one_line(res.output), res.output


def _edit_parameters(model: Path, edits: dict[str, str]) -> None:
    cfg = read_config(model)
    for key, value in edits.items():
        cfg.parameters[key].string_value = value
    (model / "config.pbtxt").write_text(text_format.MessageToString(cfg))


def test_check_cross_checks_metadata_json_flat_parameters_and_the_model_file(small_onnx, repo_v1, tmp_path):
    model = repo_v1 / "act"
    params = {k: v.string_value for k, v in read_config(model).parameters.items()}
    n = int(params["version.1.n_action_steps"])
    meta = json.loads(params["version.1.metadata"])
    meta["spec"]["n_action_steps"] = n - 1  # what PolicyClient reads first

    cases = {
        "metadata json vs file": (
            {"version.1.metadata": json.dumps(meta)},
            f"version.1.metadata says n_action_steps '{n - 1}'",
        ),
        "flat per-version vs file": ({"version.1.n_action_steps": str(n - 1)}, "version.1.n_action_steps is"),
        "flat model-wide vs latest file": ({"n_action_steps": str(n - 1)}, "parameter n_action_steps is"),
        "ensembling switched on in the json only": (
            {
                "version.1.metadata": params["version.1.metadata"].replace(
                    '"ensemble_coeff": null', '"ensemble_coeff": 0.5'
                )
            },
            "says host",
        ),
        "broken json": ({"version.1.metadata": "{"}, "is not policy-export metadata"),
        "model-wide record a client falls back to": (
            {"policy_export": json.dumps(meta)},
            f"parameter policy_export says n_action_steps '{n - 1}'",
        ),
    }
    for label, (edits, message) in cases.items():
        work = tmp_path / label.replace(" ", "_")
        shutil.copytree(repo_v1, work)
        _edit_parameters(work / "act", edits)
        res = runner.invoke(app, ["triton-repo", "--check", str(work)])
        assert res.exit_code == 2, (label, res.output)
        assert message in one_line(res.output), (label, res.output)
