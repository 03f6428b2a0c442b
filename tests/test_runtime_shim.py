"""The host-side action shim: LeRobot's queue / temporal-ensembling state, numpy only.

The ensembler is checked against LeRobot's own ``ACTTemporalEnsembler`` fed the very same
chunks; batches are checked against independent single-robot shims (per-robot resets are
something LeRobot itself cannot do, see test_rollout.py for the comparison with LeRobot
policies). The import test runs in a subprocess where torch, lerobot, onnxruntime, onnx and
tritonclient cannot be imported at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from policy_export.errors import BadInputError
from policy_export.runtime import ActionQueue, ShimSettings, TemporalEnsembler


def _chunks(rng: np.random.Generator, steps: int, batch: int, chunk: int, dim: int) -> list[np.ndarray]:
    return [rng.normal(0, 1, (batch, chunk, dim)).astype(np.float32) for _ in range(steps)]


@pytest.mark.parametrize("coeff", [0.01, -0.05, 0.0])
def test_ensembler_matches_lerobot_on_the_same_chunks(coeff):
    import torch
    from lerobot.policies.act.modeling_act import ACTTemporalEnsembler

    batch, chunk, dim, steps, reset_at = 3, 12, 4, 30, 17
    chunks = _chunks(np.random.default_rng(0), steps, batch, chunk, dim)
    ref, ours = ACTTemporalEnsembler(coeff, chunk), TemporalEnsembler(coeff, chunk)
    ref_out, our_out = [], []
    for step, c in enumerate(chunks):
        if step == reset_at:
            ref.reset()
            ours.reset()
        ref_out.append(ref.update(torch.from_numpy(c)).numpy())
        our_out.append(ours.step(lambda rows, c=c: c[rows], batch))
    ref_out, our_out = np.stack(ref_out), np.stack(our_out)
    assert our_out.dtype == np.float32 and our_out.shape == (steps, batch, dim)
    # Same float32 operations in the same order; only torch's vectorised exp may be an ulp off.
    np.testing.assert_allclose(our_out, ref_out, rtol=2e-6, atol=1e-7)
    assert np.mean(our_out == ref_out) > 0.9
    # And the ensemble really averages: after the first step an action is not the newest prediction.
    assert not np.allclose(our_out[5], chunks[5][:, 0])


def test_ensembler_weights_follow_torch():
    import torch

    for coeff, chunk in [(0.01, 100), (0.1, 50), (-0.05, 12)]:
        ours = TemporalEnsembler(coeff, chunk)
        w = torch.exp(-coeff * torch.arange(chunk))
        np.testing.assert_allclose(ours.weights, w.numpy(), rtol=2e-7, atol=0)
        np.testing.assert_allclose(ours.weights_cumsum, torch.cumsum(w, dim=0).numpy(), rtol=2e-7, atol=0)


def test_queue_pops_the_first_n_actions_of_each_chunk():
    rng = np.random.default_rng(1)
    chunk, n, dim = 8, 3, 2
    q = ActionQueue(chunk, n)
    made: list[np.ndarray] = []

    def predict(rows):
        made.append(rng.normal(size=(len(rows), chunk, dim)).astype(np.float32))
        return made[-1]

    out = [q.step(predict, 1) for _ in range(7)]
    assert len(made) == 3  # steps 0, 3, 6
    expected = [made[0][0, 0], made[0][0, 1], made[0][0, 2], made[1][0, 0], made[1][0, 1], made[1][0, 2], made[2][0, 0]]
    np.testing.assert_array_equal(np.stack(out)[:, 0], np.stack(expected))
    q.reset()
    q.step(predict, 1)
    assert len(made) == 4  # a reset empties the queue, like policy.reset()


def _independent(shim_factory, chunks_for, steps, batch, resets):
    """Reference: one single-robot shim per robot, each fed that robot's rows."""
    singles = [shim_factory() for _ in range(batch)]
    out = []
    for step in range(steps):
        row = []
        for b, s in enumerate(singles):
            if (step, b) in resets:
                s.reset()
            row.append(s.step(lambda rows, b=b, step=step: chunks_for(step)[b : b + 1], 1)[0])
        out.append(np.stack(row))
    return np.stack(out)


@pytest.mark.parametrize("mode", ["queue", "ensemble"])
def test_batch_with_per_robot_reset_equals_independent_robots(mode):
    batch, chunk, dim, steps = 4, 10, 3, 26
    chunks = _chunks(np.random.default_rng(2), steps, batch, chunk, dim)
    settings = ShimSettings(chunk, 4) if mode == "queue" else ShimSettings(chunk, 1, 0.02)
    resets = {(6, 1), (9, 3), (15, 1), (21, 0)}
    shim = settings.make()
    asked: list[list[int]] = []
    out = []
    for step in range(steps):
        for s, b in sorted(resets):
            if s == step:
                shim.reset(robot=b)

        def predict(rows, step=step):
            asked.append(rows.tolist())
            return chunks[step][rows]

        out.append(shim.step(predict, batch))
    expected = _independent(settings.make, lambda s: chunks[s], steps, batch, resets)
    # Row-wise numpy arithmetic: the batch is bit-for-bit the robots run one by one.
    np.testing.assert_array_equal(np.stack(out), expected)
    if mode == "queue":
        assert asked[0] == [0, 1, 2, 3] and [1] in asked and [3] in asked  # only the reset robot refills
    else:
        assert all(a == [0, 1, 2, 3] for a in asked)


def test_batch_size_change_needs_a_full_reset():
    for shim in (ActionQueue(5, 2), TemporalEnsembler(0.01, 5)):
        shim.step(lambda rows: np.zeros((len(rows), 5, 2), np.float32), 3)
        with pytest.raises(BadInputError, match="batch size 2 != 3 robots"):
            shim.step(lambda rows: np.zeros((len(rows), 5, 2), np.float32), 2)
        with pytest.raises(BadInputError, match="out of range"):
            shim.reset(robot=3)
        shim.reset()
        assert shim.step(lambda rows: np.ones((len(rows), 5, 2), np.float32), 2).shape == (2, 2)


def test_wrong_chunk_shape_is_one_clear_error():
    q = ActionQueue(6, 3)
    with pytest.raises(BadInputError, match=r"action chunk shape \(1, 5, 2\) != expected \[1, 6, action_dim\]"):
        q.step(lambda rows: np.zeros((1, 5, 2), np.float32), 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 11, None), "n_action_steps must be in"),
        ((10, 0, None), "n_action_steps must be in"),
        ((10, 2, 0.01), "temporal ensembling needs n_action_steps == 1"),
        ((0, 1, None), "chunk_size must be"),
    ],
)
def test_settings_refuse_what_lerobot_refuses(args, message):
    with pytest.raises(BadInputError, match=message):
        ShimSettings(*args)


def test_settings_pick_the_mode_lerobot_picks():
    assert isinstance(ShimSettings(10, 10).make(), ActionQueue)
    assert isinstance(ShimSettings(10, 1, 0.01).make(), TemporalEnsembler)
    assert ShimSettings(10, 1, 0.0).mode == "ensemble"  # coefficient 0 is uniform weighting, not "off"


BLOCKER = """
import sys
BLOCKED = {blocked!r}
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test")
        return None
sys.meta_path.insert(0, _Block())
"""


def run_blocked(code: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_runtime_imports_and_runs_with_numpy_alone():
    proc = run_blocked(
        """
        import numpy as np
        import policy_export.runtime as rt
        import policy_export.runtime.triton  # the Triton backend module itself is import-light too
        from policy_export.spec import ArtifactMetadata, CameraSpec, PolicySpec

        q = rt.ShimSettings(6, 3).make()
        e = rt.ShimSettings(6, 1, 0.01).make()
        chunk = np.arange(2 * 6 * 2, dtype=np.float32).reshape(2, 6, 2)
        assert q.step(lambda rows: chunk[rows], 2).tolist() == [[0, 1], [12, 13]]
        assert e.step(lambda rows: chunk[rows], 2).shape == (2, 2)
        spec = PolicySpec("act", "observation.state", 3, "action", 2,
                          (CameraSpec("observation.images.top", "image", (3, 4, 5)),), 6, 3, {}, "h")
        prep = rt.ObservationAdapter(ArtifactMetadata(spec, "onnx", image_format="uint8"))(
            {"observation.state": np.zeros(3), "observation.images.top": np.zeros((3, 4, 5), np.float32)})
        assert prep.feed()["image"].shape == (1, 4, 5, 3)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "lerobot", "onnxruntime", "onnx", "tritonclient"})
        assert not heavy, heavy
        print("ok")
        """,
        ("torch", "lerobot", "onnxruntime", "onnx", "tritonclient", "typer", "rich"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_bench_shim_cli_writes_table_and_json(tmp_path):
    """Functional check of the benchmark command (its figures are not asserted on: not a timed test)."""
    from typer.testing import CliRunner

    from policy_export.cli.app import app

    out = tmp_path / "shim.json"
    args = ["bench-shim", "--chunk-size", "10", "--action-dim", "3", "--batch-sizes", "1,2", "--queue-steps", "5"]
    res = CliRunner().invoke(app, [*args, "--steps", "20", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "Action shim overhead per control step" in res.output
    report = json.loads(out.read_text())
    rows = {(r["impl"], r["mode"], r["batch"]) for r in report["rows"]}
    impls = {"policy_export (numpy)", "lerobot (torch)"}
    assert rows == {(i, m, b) for i in impls for m in ("queue n=5", "ensemble c=0.01") for b in (1, 2)}
    assert all(0 < r["median_us"] <= r["p90_us"] <= r["p99_us"] for r in report["rows"])
    assert report["machine"]["logical_cpus"] >= 1

    res = CliRunner().invoke(app, ["bench-shim", "--chunk-size", "10", "--queue-steps", "20"])
    assert res.exit_code == 2 and "--queue-steps must be <= --chunk-size 10" in res.output
