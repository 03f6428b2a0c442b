"""Triton repositories in object storage (``triton-repo --repo s3://...``), against a real S3-protocol
server on loopback (moto), with publishing subprocesses killed by SIGKILL at each phase of a publish."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from s3_harness import moto_s3, s3_env

from policy_export.triton.s3 import FAULT_ENV, S3Location, check_remote, read_model

CLI = [sys.executable, "-m", "policy_export"]
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def endpoint():
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="module")
def env(endpoint):
    return s3_env()


@pytest.fixture(scope="module")
def v2_onnx(small_onnx, tmp_path_factory) -> Path:
    """Version 2: the same policy with its action head's bias moved (as fine-tuning would), so every
    action differs from version 1's while the signature and the metadata's shape stay."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(small_onnx))
    for init in model.graph.initializer:
        if init.name == "action_head.bias":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.5), init.name))
            break
    else:  # pragma: no cover - the export changed its names
        raise AssertionError("no action_head.bias initializer in the small export")
    out = tmp_path_factory.mktemp("v2") / "small_v2.onnx"
    onnx.save(model, str(out))
    return out


def _bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_keys()).create_bucket(Bucket=name)


def _keys() -> dict[str, str]:
    env = s3_env()
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": "us-east-1",
    }


@dataclass
class _Result:
    returncode: int
    stdout: str
    stderr: str


def _cli(*args: str, env: dict[str, str], extra_env: dict[str, str] | None = None) -> _Result:
    """In this process (typer's runner; the environment swapped in for the call): no interpreter start-up."""
    from typer.testing import CliRunner

    from policy_export.cli.app import app

    res = CliRunner().invoke(
        app, list(args), env={**{k: v for k, v in env.items() if k.startswith("AWS_")}, **(extra_env or {})}
    )
    return _Result(res.exit_code, res.stdout, res.stderr)


def _subprocess_cli(
    *args: str, env: dict[str, str], extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A real process: what SIGKILL drills need."""
    return subprocess.run(
        [*CLI, *args],
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _publish(
    artifact: Path, repo: str, endpoint: str, version: int, env: dict[str, str], *extra: str, kill_at: str = ""
):
    args = ["triton-repo", "-a", str(artifact), "--repo", repo, "-m", "act", "--version", str(version)]
    if kill_at:
        return _subprocess_cli(*args, "--s3-endpoint", endpoint, *extra, env=env, extra_env={FAULT_ENV: kill_at})
    return _cli(*args, "--s3-endpoint", endpoint, *extra, env=env)


def _state(endpoint: str, bucket: str) -> tuple[list[int], list[int], str | None]:
    """(committed versions, versions Triton serves, the config's text) as a reader sees them."""
    import boto3

    loc = S3Location(bucket, "models", endpoint)
    model = read_model(boto3.client("s3", endpoint_url=endpoint, **_keys()), loc, "act")
    with mock.patch.dict(os.environ, {k: v for k, v in s3_env().items() if k.startswith("AWS_")}):
        reports = check_remote(loc)
    assert all(r.ok for r in reports), [r.problems for r in reports]
    return model.committed, reports[0].serving, model.config_text


def test_publish_check_and_never_clobber(small_onnx, v2_onnx, endpoint, env):
    _bucket(endpoint, "plain")
    repo = "s3://plain/models"
    res = _publish(small_onnx, repo, endpoint, 1, env)
    assert res.returncode == 0, res.stderr
    res = _publish(v2_onnx, repo, endpoint, 2, env)
    assert res.returncode == 0, res.stderr
    committed, serving, text = _state(endpoint, "plain")
    assert committed == [1, 2] and serving == [2]  # latest:1, resolved into an explicit list
    assert text is not None and "specific" in text
    check = _cli("triton-repo", "--check", repo, "--s3-endpoint", endpoint, env=env)
    assert check.returncode == 0 and "versions 1, 2; served 2" in check.stdout, check.stdout + check.stderr
    again = _publish(small_onnx, repo, endpoint, 2, env)
    assert again.returncode == 2 and "never replaced" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    forced = _publish(small_onnx, repo, endpoint, 2, env, "--force")
    assert forced.returncode == 2 and "--force" in forced.stderr
    assert _state(endpoint, "plain")[:2] == ([1, 2], [2])  # nothing changed by the refused writes


@pytest.mark.parametrize(
    "kill_at",
    [
        pytest.param("locked", marks=pytest.mark.fleet),
        pytest.param("staged", marks=pytest.mark.fleet),
        pytest.param("verified", marks=pytest.mark.fleet),
        "copied",  # the one in the default run: half of version 2 sits in the repository
        pytest.param("copied-all", marks=pytest.mark.fleet),
        pytest.param("committed", marks=pytest.mark.fleet),
    ],
)
def test_sigkill_at_any_phase_leaves_no_half_version(small_onnx, v2_onnx, endpoint, env, kill_at):
    """A publish killed by SIGKILL after each phase: before the commit the repository still serves
    only version 1 (and passes --check), after it version 2 is complete; the next write takes the
    dead writer's lock over and clears its leftovers."""
    bucket = f"kill-{kill_at}"
    _bucket(endpoint, bucket)
    repo = f"s3://{bucket}/models"
    assert _publish(small_onnx, repo, endpoint, 1, env).returncode == 0
    killed = _publish(v2_onnx, repo, endpoint, 2, env, "--lock-ttl", "0", kill_at=kill_at)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    committed, serving, _ = _state(endpoint, bucket)
    if kill_at == "committed":
        assert (committed, serving) == ([1, 2], [2])
    else:
        assert (committed, serving) == ([1], [1])
    nxt = _publish(v2_onnx, repo, endpoint, 3, env, "--lock-wait", "5")
    assert nxt.returncode == 0, nxt.stderr
    committed, serving, _ = _state(endpoint, bucket)
    assert committed == ([1, 2, 3] if kill_at == "committed" else [1, 3]) and serving == [3]
    import boto3

    keys = boto3.client("s3", endpoint_url=endpoint, **_keys()).list_objects_v2(Bucket=bucket).get("Contents", [])
    names = [k["Key"] for k in keys]
    assert not [k for k in names if ".staging/" in k], names  # the dead writer's staging is gone
    if kill_at != "committed":
        assert not [k for k in names if k.startswith("models/act/2/")], names  # its half version too


@pytest.mark.fleet
def test_concurrent_writers_both_land(small_onnx, v2_onnx, endpoint, env):
    _bucket(endpoint, "race")
    repo = "s3://race/models"
    assert _publish(small_onnx, repo, endpoint, 1, env).returncode == 0

    def args(v):
        return [
            *CLI,
            "triton-repo",
            "-a",
            str(v2_onnx),
            "--repo",
            repo,
            "-m",
            "act",
            "--version",
            str(v),
            "--s3-endpoint",
            endpoint,
        ]

    procs = [
        subprocess.Popen(args(v), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in (2, 3)
    ]
    outs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert _state(endpoint, "race")[:2] == ([1, 2, 3], [3])


def test_bad_input_is_one_line_exit_2_without_secrets(small_onnx, endpoint, env, tmp_path):
    from policy_export.triton.server import free_port

    secret = env["AWS_SECRET_ACCESS_KEY"]
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        (["--repo", "s3://nobucket/models", "--s3-endpoint", endpoint], "does not exist"),
        (["--repo", "s3://plain/models", "--s3-endpoint", dead], "does not answer"),
        (["--repo", "s3://plain", "--s3-endpoint", endpoint], "give a prefix"),
        (["--repo", "s3://Bad_Bucket/models", "--s3-endpoint", endpoint], "not a valid S3 bucket"),
    ]
    for args, needle in cases:
        res = _cli("triton-repo", "-a", str(small_onnx), "-m", "act", *args, env=env)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, res.stderr)
        assert secret not in res.stderr + res.stdout
    check = _cli("triton-repo", "--check", "s3://nobucket/models", "--s3-endpoint", endpoint, env=env)
    # wrong credentials, refused by the server itself (moto with IAM checks on)
    with moto_s3(auth=True) as strict:
        for args in (
            ["triton-repo", "--check", "s3://plain/models"],
            ["triton-repo", "-a", str(small_onnx), "-m", "act", "--repo", "s3://plain/models"],
        ):
            res = _cli(*args, "--s3-endpoint", strict, env=env)
            lines = res.stderr.strip().splitlines()
            assert res.returncode == 2 and len(lines) == 1 and "refused these credentials" in lines[0], res.stderr
            assert secret not in res.stderr + res.stdout and env["AWS_ACCESS_KEY_ID"] not in res.stderr
    assert check.returncode == 2 and "does not exist" in check.stderr


@pytest.mark.fleet
def test_check_fails_on_a_broken_remote_model(small_onnx, endpoint, env):
    """A config naming a version whose files are gone: --check exits 2 and says which."""
    import boto3

    _bucket(endpoint, "broken")
    repo = "s3://broken/models"
    assert _publish(small_onnx, repo, endpoint, 1, env).returncode == 0
    s3 = boto3.client("s3", endpoint_url=endpoint, **_keys())
    for obj in s3.list_objects_v2(Bucket="broken", Prefix="models/act/1/")["Contents"]:
        s3.delete_object(Bucket="broken", Key=obj["Key"])
    res = _cli("triton-repo", "--check", repo, "--s3-endpoint", endpoint, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "commits versions [1] that have no files" in res.stderr


def test_upgrade_to_a_version_the_repository_does_not_hold(small_onnx, endpoint, env):
    """Refused from the repository alone, before any replica is contacted (the URL answers nothing)."""
    from policy_export.triton.server import free_port

    _bucket(endpoint, "held")
    assert _publish(small_onnx, "s3://held/models", endpoint, 1, env).returncode == 0
    url = f"127.0.0.1:{free_port()}"
    res = _cli(
        "upgrade", "--url", url, "--model", "act", "--version", "2", "--repo", "s3://held/models",
        "--s3-endpoint", endpoint, env=env,
    )  # fmt: skip
    assert res.returncode == 2 and "does not hold version 2 (it holds 1)" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    missing = _cli(
        "upgrade", "--url", url, "--model", "nope", "--version", "1", "--repo", "s3://held/models",
        "--s3-endpoint", endpoint, env=env,
    )  # fmt: skip
    assert missing.returncode == 2 and "does not hold model 'nope'" in missing.stderr, missing.stderr


@pytest.mark.fleet
def test_tritonserver_serves_the_old_version_after_a_killed_publish(small_onnx, v2_onnx, endpoint, env, monkeypatch):
    """The real reader: a publish SIGKILLed after half of version 2 reached the repository, then a
    tritonserver started on the repository (explicit mode, as `serve` runs it) serves version 1 only."""
    import tritonclient.grpc as grpcclient
    from triton_harness import require_server

    from policy_export.triton.server import TritonServer

    _bucket(endpoint, "reader")
    repo = "s3://reader/models"
    assert _publish(small_onnx, repo, endpoint, 1, env, "--backend", "python").returncode == 0
    assert _publish(v2_onnx, repo, endpoint, 2, env, kill_at="copied").returncode == -9
    for key, value in env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    loc = S3Location.parse(repo, endpoint)
    server = TritonServer(
        repo=loc.triton_url(),
        install=require_server(),
        startup_timeout_s=180,
        extra_args=("--model-control-mode=explicit", "--load-model=act"),
    )
    try:
        with server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            index = client.get_model_repository_index(as_json=True)["models"]
            assert [(m["version"], m["state"]) for m in index if m["name"] == "act"] == [("1", "READY")], index
            assert not client.is_model_ready("act", "2")
            client.close()
    finally:
        server.cleanup()


@pytest.mark.fleet
def test_serve_from_object_storage_with_two_replicas(small_onnx, endpoint, env, monkeypatch):
    """The user command itself: ``policy-export serve --repo s3://... --s3-endpoint URL --replicas 2`` as a
    real process serves the published model from object storage on two tritonservers (one ready line each,
    then the replicas line a fleet client takes); each answers the robot runtime with the local artifact's
    chunk, and SIGTERM takes both servers with it."""
    import numpy as np
    from fleet_harness import serve_process, tag_servers, tritonservers

    from policy_export.artifacts import inspect_artifact
    from policy_export.runtime import PolicyClient

    _bucket(endpoint, "served")
    repo = "s3://served/models"
    assert _publish(small_onnx, repo, endpoint, 1, env, "--backend", "python").returncode == 0
    tag = tag_servers(monkeypatch)
    aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
    spec = inspect_artifact(small_onnx).metadata.spec
    rng = np.random.default_rng(0)
    obs = {spec.state_key: rng.normal(0, 1, spec.state_dim).astype(np.float32)}
    for cam in spec.cameras:
        c, h, w = cam.shape
        obs[cam.key] = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    with PolicyClient.from_artifact(small_onnx) as local:
        want = np.asarray(local.predict_chunk(obs))
    with serve_process(repo, "--s3-endpoint", endpoint, "--replicas", "2", replicas=2, env_extra=aws) as served:
        urls = next(ln for ln in served.lines if ln.startswith("replicas:")).split(":", 1)[1].strip().split(",")
        assert len(urls) == 2 and len(set(urls)) == 2 and urls[0] == served.grpc_url, served.output()
        for url in urls:
            with PolicyClient.from_triton(url, "act") as remote:
                assert np.abs(np.asarray(remote.predict_chunk(obs)) - want).max() < 1e-5, url
    assert not tritonservers(tag), "serve left a replica behind"
