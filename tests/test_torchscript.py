"""TorchScript export: dynamic batch, parity vs LeRobot eager, loadable without lerobot or policy-export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from policy_export.artifacts import inspect_artifact, read_torchscript_metadata
from policy_export.cli.app import app
from policy_export.families import eager_chunk
from policy_export.inputs import random_inputs
from policy_export.verify import verify_artifacts

runner = CliRunner()

# A child interpreter in which lerobot and this project cannot be imported at all.
_BLOCKED_CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = ("lerobot", "policy_export", "policy_export_wrappers")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import policy_export  # noqa: F401
        raise SystemExit("the import blocker does not work")
    except ImportError:
        pass

    import numpy as np
    import torch

    path, data = sys.argv[1], np.load(sys.argv[2])
    extra = {"policy_export.json": ""}
    module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["policy_export.json"])
    names = ["state", *(c["input_name"] for c in meta["spec"]["cameras"])]
    out = {}
    with torch.inference_mode():
        for b in (1, 3):
            out[f"b{b}"] = module(*(torch.from_numpy(data[f"b{b}_{n}"]) for n in names)).numpy()
    np.savez(sys.argv[3], **out)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"names": names, "leaked": leaked}))
    """
)


def test_torchscript_runs_in_fresh_interpreter_without_lerobot_or_project(small_torchscript, small_loaded, tmp_path):
    spec = small_loaded.spec
    rng = np.random.default_rng(21)
    feeds = {b: random_inputs(spec, b, rng) for b in (1, 3)}  # batch sizes other than the trace batch (2)
    np.savez(tmp_path / "in.npz", **{f"b{b}_{n}": a for b, f in feeds.items() for n, a in f.items()})
    script = tmp_path / "child.py"
    script.write_text(_BLOCKED_CHILD)
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            str(script),
            str(small_torchscript),
            str(tmp_path / "in.npz"),
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["names"] == spec.input_names and result["leaked"] == []
    got = np.load(tmp_path / "out.npz")
    for b, feed in feeds.items():
        want = eager_chunk(small_loaded, feed)
        assert got[f"b{b}"].shape == (b, spec.chunk_size, spec.action_dim)
        np.testing.assert_allclose(got[f"b{b}"], want, rtol=0, atol=1e-4)


def test_torchscript_parity_vs_eager_at_batch_1_and_n(small_torchscript, small_loaded):
    report = verify_artifacts(small_loaded, [small_torchscript], batch_sizes=[1, 5], samples=2, seed=13)
    check = report.checks[0]
    assert report.exit_code == 0, check
    assert check.kind == "torchscript" and check.runner == "torchscript-cpu" and check.precision == "fp32"
    assert [r.batch_size for r in check.results] == [1, 5]
    for r in check.results:
        assert r.stats.max_abs <= 1e-4 and r.stats.cosine > 0.999999 and r.stats.nonfinite == 0


def test_torchscript_metadata_matches_onnx_metadata(small_torchscript, small_onnx, small_loaded):
    ts, ox = inspect_artifact(small_torchscript), inspect_artifact(small_onnx)
    assert ts.kind == "torchscript" and ts.metadata.artifact_kind == "torchscript"
    assert ts.metadata.spec == ox.metadata.spec == small_loaded.spec
    assert ts.metadata.exporter == "torch.jit.trace" and ts.metadata.versions.get("torch")
    assert [i.name for i in ts.inputs] == [i.name for i in ox.inputs] == ["state", "image"]
    assert read_torchscript_metadata(small_torchscript).spec.norm_hash == small_loaded.spec.norm_hash


def test_cli_uint8_multicam_export_and_verify(multicam_ckpt, multicam_loaded, tmp_path):
    out = tmp_path / "frames.pt"
    res = runner.invoke(app, ["torchscript", "-c", str(multicam_ckpt), "-o", str(out), "--image-format", "uint8"])
    assert res.exit_code == 0, res.output
    meta = inspect_artifact(out).metadata
    assert meta.image_format == "uint8" and meta.input_dtypes()["image_top"] == "uint8"
    assert meta.spec.input_names == ["state", "image_top", "image_wrist"]
    report = verify_artifacts(multicam_loaded, [out], batch_sizes=[1, 4], samples=1, seed=3)
    assert report.exit_code == 0, report.checks[0]


def test_cli_refuses_existing_output_without_force_and_leaves_no_partial(small_ckpt, small_torchscript, tmp_path):
    out = tmp_path / "keep.pt"
    shutil.copy(small_torchscript, out)
    before = out.read_bytes()
    res = runner.invoke(app, ["torchscript", "-c", str(small_ckpt), "-o", str(out)])
    assert res.exit_code == 2 and "--force" in res.output
    assert out.read_bytes() == before
    res = runner.invoke(app, ["torchscript", "-c", str(small_ckpt), "-o", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert zipfile.is_zipfile(out) and sorted(p.name for p in tmp_path.iterdir()) == ["keep.pt"]


def test_traced_module_is_not_bound_to_the_trace_batch(small_torchscript, small_loaded):
    import torch

    module = torch.jit.load(str(small_torchscript))
    spec = small_loaded.spec
    for b in (1, 7):
        feed = random_inputs(spec, b, np.random.default_rng(b))
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feed[n]) for n in spec.input_names))
        assert tuple(out.shape) == (b, spec.chunk_size, spec.action_dim)


@pytest.mark.parametrize("bad", ["missing", "not-a-zip"])
def test_verify_rejects_unreadable_torchscript(small_ckpt, tmp_path, bad):
    path = tmp_path / "bad.pt"
    if bad == "not-a-zip":
        with zipfile.ZipFile(path, "w") as zf:  # a zip archive without our metadata
            zf.writestr("archive/data.pkl", b"x")
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(path)])
    assert res.exit_code == 2
    assert ("does not exist" if bad == "missing" else "no extra/policy_export.json") in res.output
