"""Rollout parity: exported core + host-side shim vs LeRobot's stateful ``select_action``.

Fresh random observations at every control step, a reset mid-episode, queue mode with
n_action_steps < chunk_size and = chunk_size, ensembling mode, and a batch of robots that
reset one at a time compared with one LeRobot policy per robot (LeRobot's own batch can
only reset all robots together). The negative tests show the comparison catches a shim
whose settings are off.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from policy_export.artifacts import inspect_artifact
from policy_export.cli.app import app
from policy_export.compare import compare
from policy_export.inputs import checkpoint_inputs
from policy_export.reference import lerobot_observation
from policy_export.rollout import reset_steps, robot_observation, rollout_checks, rollout_modes, run_rollout
from policy_export.runtime import PolicyClient, ShimSettings

ATOL = 1e-4


@pytest.fixture(scope="module")
def ensemble_loaded(ensemble_ckpt):
    from policy_export.checkpoint import load_checkpoint

    return load_checkpoint(ensemble_ckpt)


@pytest.fixture(scope="module")
def ensemble_onnx(ensemble_loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from policy_export.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("ensemble_onnx") / "ensemble.onnx"
    export_onnx(ensemble_loaded, path)
    return path


def _passed(checks):
    for c in checks:
        assert c.status == "passed", (c.check, c.reason, [r.stats for r in c.results])
        for r in c.results:
            assert r.lerobot_chunk_calls == r.client_core_calls > 0
            assert len(r.resets) == 2 and r.stats.max_abs < ATOL
    return checks


def test_queue_rollout_n_action_steps_below_chunk_size(small_loaded, small_onnx):
    assert small_loaded.spec.n_action_steps < small_loaded.spec.chunk_size
    (check,) = _passed(rollout_checks(small_loaded, [inspect_artifact(small_onnx)], steps=25, batch_sizes=[1, 2]))
    assert check.check == "rollout queue n=10"
    r = check.results[0]
    assert r.resets == [0, 12]  # the mid-episode reset lands inside a half-used queue
    assert r.lerobot_chunk_calls == 4  # steps 0 and 10, then 12 (reset) and 22


def test_queue_rollout_n_action_steps_equal_chunk_size(multicam_loaded, multicam_onnx):
    spec = multicam_loaded.spec
    assert spec.n_action_steps == spec.chunk_size and len(spec.cameras) == 2
    (check,) = _passed(rollout_checks(multicam_loaded, [inspect_artifact(multicam_onnx)], steps=36, batch_sizes=[2]))
    assert check.results[0].lerobot_chunk_calls == 4  # steps 0, 16 (queue ran dry), 18 (reset), 34


def test_ensembling_rollout(ensemble_loaded, ensemble_onnx):
    checks = _passed(rollout_checks(ensemble_loaded, [inspect_artifact(ensemble_onnx)], steps=10, batch_sizes=[3]))
    assert [c.check for c in checks] == ["rollout queue n=12", "rollout ensemble c=0.01"]
    ens = checks[1].results[0]
    assert ens.lerobot_chunk_calls == ens.client_core_calls == 10  # ensembling asks for a chunk every step


def test_rollout_catches_a_shim_that_is_off(small_loaded, small_onnx, ensemble_loaded, ensemble_onnx):
    spec = small_loaded.spec
    (lerobot,) = rollout_modes(small_loaded)
    with PolicyClient.from_artifact(small_onnx, settings=ShimSettings(spec.chunk_size, 5)) as client:
        trace = run_rollout(small_loaded, client, lerobot, steps=12, batch_size=1, seed=0, image_format="float32")
    assert trace.client_core_calls != trace.lerobot_chunk_calls
    assert not compare(trace.reference, trace.candidate, ATOL).passed

    espec = ensemble_loaded.spec
    lerobot = rollout_modes(ensemble_loaded)[1]
    assert ShimSettings.from_spec(lerobot.spec) == ShimSettings(espec.chunk_size, 1, espec.host.ensemble_coeff)
    with PolicyClient.from_artifact(ensemble_onnx, settings=ShimSettings(espec.chunk_size, 1, 0.5)) as client:
        trace = run_rollout(ensemble_loaded, client, lerobot, steps=8, batch_size=2, seed=0, image_format="float32")
    assert trace.client_core_calls == trace.lerobot_chunk_calls
    assert not compare(trace.reference, trace.candidate, ATOL).passed


def _lerobot_step(ckpt, policy, feed):
    import torch

    with torch.inference_mode():
        batch = ckpt.preprocessor(lerobot_observation(ckpt, feed))
        return ckpt.postprocessor(policy.select_action(batch)).numpy()


@pytest.mark.parametrize("which", ["queue", "ensemble"])
def test_batch_of_robots_with_per_robot_reset_vs_one_lerobot_policy_per_robot(
    which, small_loaded, small_onnx, ensemble_loaded, ensemble_onnx
):
    ckpt, artifact = (small_loaded, small_onnx) if which == "queue" else (ensemble_loaded, ensemble_onnx)
    robots, steps = 3, (24 if which == "queue" else 12)
    # step -> robots starting a new episode
    resets = {5: [1], 12: [0, 2], 17: [1]} if which == "queue" else {3: [1], 6: [0, 2], 9: [1]}
    policies = [copy.deepcopy(ckpt.policy) for _ in range(robots)]
    calls = [0] * robots
    for i, p in enumerate(policies):
        p.reset()
        original = p.predict_action_chunk

        def counted(batch, i=i, original=original):
            calls[i] += 1
            return original(batch)

        p.predict_action_chunk = counted
    rows_asked = []
    with PolicyClient.from_artifact(artifact) as client:
        infer = client.backend.infer
        client.backend.infer = lambda feed: rows_asked.append(len(feed["state"])) or infer(feed)
        ref, out = [], []
        for step in range(steps):
            for robot in resets.get(step, []):
                policies[robot].reset()
                client.reset(robot=robot)
            feed = checkpoint_inputs(ckpt, robots, np.random.default_rng([5, step]))
            ref.append(
                np.concatenate(
                    [_lerobot_step(ckpt, p, {k: v[i : i + 1] for k, v in feed.items()}) for i, p in enumerate(policies)]
                )
            )
            out.append(client.select_action(robot_observation(ckpt, feed, batched=True)))
    ref, out = np.stack(ref), np.stack(out)
    stats = compare(ref, out, ATOL)
    assert stats.passed, stats
    assert sum(rows_asked) == sum(calls)  # the shim asked for exactly the chunks the robots' policies computed
    if which == "queue":
        assert rows_asked == [3, 1, 2, 2, 1, 1, 2]  # steps 0, 5, 10, 12, 15, 17, 22: only robots with an empty queue


def test_reset_steps_land_mid_queue():
    assert reset_steps(20, 10) == [0, 11]
    assert reset_steps(25, 10) == [0, 12]
    assert reset_steps(20, 1) == [0, 10]


def test_rollout_modes_follow_the_checkpoint(small_loaded, ensemble_loaded):
    assert [m.label for m in rollout_modes(small_loaded)] == ["rollout queue n=10"]
    assert [m.spec.host.merge for m in rollout_modes(ensemble_loaded)] == ["queue", "ensemble"]


def test_verify_rollout_cli_reports_and_exit_codes(ensemble_ckpt, ensemble_onnx, tmp_path):
    runner = CliRunner()
    args = ["verify", "-c", str(ensemble_ckpt), "-a", str(ensemble_onnx), "--batch-sizes", "2", "--samples", "1"]
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    res = runner.invoke(app, [*args, "--rollout", "10", "--report", str(report), "--junit", str(junit)])
    assert res.exit_code == 0, res.output
    data = json.loads(report.read_text())
    assert [c["check"] for c in data["checks"]] == ["chunk", "rollout queue n=12", "rollout ensemble c=0.01"]
    row = data["checks"][2]["results"][0]
    assert row["samples"] == 10 and len(row["per_step_max_abs"]) == 10 and row["resets"] == [0, 5]
    assert "ensemble.onnx rollout ensemble c=0.01" in junit.read_text()
    assert "rollout ensemble" in res.output

    res = runner.invoke(app, [*args, "--rollout", "6", "--tolerance", "1e-12"])
    assert res.exit_code == 1, res.output
    res = runner.invoke(app, [*args, "--rollout", "1"])
    assert res.exit_code == 2 and "--rollout takes the number of control steps" in res.output
