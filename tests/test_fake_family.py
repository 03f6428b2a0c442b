"""A family registered by a test alone runs through export, verify, triton-repo and the runtime.

``toyfam`` (tests/toyfam) is a LeRobot plugin policy plus its policy-export family: a tiny torch
core whose signature has a host-drawn ``noise`` input but no observation history, a combination
neither ACT nor Diffusion has. Nothing in policy-export is patched: the family is registered
through the public ``register`` and everything shared reads its declaration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.families import register, unregister

runner = CliRunner()


@pytest.fixture(scope="module")
def toyfam(tmp_path_factory):
    from toyfam.family import ToyFamily, build_checkpoint

    register(ToyFamily())
    try:
        yield build_checkpoint(tmp_path_factory.mktemp("toyfam") / "pretrained_model")
    finally:
        unregister("toyfam")


def test_fake_family_exports_verifies_serves_and_runs(toyfam, tmp_path):
    from policy_export.artifacts import inspect_artifact
    from policy_export.runners import open_runner
    from policy_export.runtime import PolicyClient
    from policy_export.spec import Role

    onnx = tmp_path / "toy.onnx"
    res = runner.invoke(app, ["onnx", "--checkpoint", str(toyfam), "--output", str(onnx)])
    assert res.exit_code == 0, res.output
    info = inspect_artifact(onnx)
    assert [(t.name, t.role) for t in info.metadata.spec.signature.inputs] == [
        ("state", Role.STATE),
        ("image", Role.CAMERA),
        ("noise", Role.NOISE),
    ]
    assert [(s.name, s.shape) for s in info.inputs][-1] == ("noise", ("batch", 4, 2))
    assert info.metadata.spec.family == {"gain": 0.5}

    # verify: the artifact vs the plugin's own predict_action_chunk, fed the same noise
    report = tmp_path / "parity.json"
    res = runner.invoke(
        app,
        [
            "verify",
            "-c",
            str(toyfam),
            "-a",
            str(onnx),
            "--batch-sizes",
            "1,3",
            "--samples",
            "2",
            "--report",
            str(report),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(report.read_text())["checks"][0]["results"]
    assert len(rows) == 2 and all(r["stats"]["max_abs"] < 1e-4 for r in rows)

    # triton-repo: the config declares the noise input; the offline check passes
    repo = tmp_path / "repo"
    res = runner.invoke(app, ["triton-repo", "--artifact", str(onnx), "--repo", str(repo), "--name", "toy"])
    assert res.exit_code == 0, res.output
    config = (repo / "toy" / "config.pbtxt").read_text()
    assert 'name: "noise"' in config and "dims: [4, 2]" in config
    assert runner.invoke(app, ["triton-repo", "--check", str(repo)]).exit_code == 0

    # the runtime: the host draws the noise (seeded), queues n_action_steps=2 of each chunk
    rng = np.random.default_rng(1)
    obs = {
        "observation.state": rng.standard_normal(3).astype(np.float32),
        "observation.images.top": rng.random((3, 8, 10), dtype=np.float32),
    }
    with PolicyClient.from_artifact(onnx, seed=7) as client, open_runner(Path(onnx)) as core:
        actions = [client.select_action(obs) for _ in range(3)]
        draws = np.random.default_rng(7)
        feed = {"state": obs["observation.state"][None], "image": obs["observation.images.top"][None]}
        first = core.infer({**feed, "noise": draws.standard_normal((1, 4, 2), dtype=np.float32)})["action_chunk"]
        second = core.infer({**feed, "noise": draws.standard_normal((1, 4, 2), dtype=np.float32)})["action_chunk"]
    np.testing.assert_allclose(actions[0], first[:, 0], rtol=1e-6)
    np.testing.assert_allclose(actions[1], first[:, 1], rtol=1e-6)
    np.testing.assert_allclose(actions[2], second[:, 0], rtol=1e-6)  # a fresh draw for the next chunk
    assert not np.allclose(first[:, 0], second[:, 0])


def test_fake_family_fields_are_checked_by_its_declared_rules(toyfam, tmp_path):
    """The family's own metadata field, hand-edited out of its declared bounds, is refused in one line."""
    import onnx as onnx_lib

    from policy_export.spec import METADATA_KEY

    path = tmp_path / "toy.onnx"
    assert runner.invoke(app, ["onnx", "--checkpoint", str(toyfam), "--output", str(path)]).exit_code == 0
    model = onnx_lib.load(str(path))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            meta = json.loads(prop.value)
            meta["spec"]["family"]["gain"] = 1e9
            prop.value = json.dumps(meta)
    onnx_lib.save(model, str(path))
    res = runner.invoke(app, ["triton-repo", "--artifact", str(path), "--repo", str(tmp_path / "r"), "--name", "t"])
    assert res.exit_code == 2 and "spec.family.gain = 1000000000.0 is outside [0.0, 10.0]" in res.output, res.output
