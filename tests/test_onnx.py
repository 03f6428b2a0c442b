"""ONNX export and the verify parity gate, with real files run by ONNX Runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from policy_export.artifacts import inspect_artifact
from policy_export.cli.app import app
from policy_export.verify import verify_artifacts

runner = CliRunner()


def test_onnx_file_is_valid_dynamic_and_carries_metadata(small_onnx, small_loaded):
    onnx.checker.check_model(str(small_onnx), full_check=True)
    model = onnx.load(str(small_onnx), load_external_data=False)
    assert [i.name for i in model.graph.input] == ["state", "image"]
    assert [o.name for o in model.graph.output] == ["action_chunk"]
    for vi in [*model.graph.input, *model.graph.output]:
        dim0 = vi.type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.dim_value, f"{vi.name}: batch axis is frozen"
    props = {p.key: p.value for p in model.metadata_props}
    for key in (
        "policy_type",
        "chunk_size",
        "n_action_steps",
        "input_names",
        "output_names",
        "normalization_hash",
        "exporter",
        "opset",
        "version.torch",
        "version.lerobot",
        "version.onnx",
    ):
        assert props.get(key), key
    assert props["normalization_hash"] == small_loaded.spec.norm_hash
    assert props["chunk_size"] == "20" and props["n_action_steps"] == "10"
    assert not small_onnx.with_name(small_onnx.name + ".data").exists()  # one self-contained file
    info = inspect_artifact(small_onnx)
    assert info.kind == "onnx" and info.metadata.spec == small_loaded.spec


@pytest.mark.parametrize(("loaded", "artifact"), [("small_loaded", "small_onnx"), ("multicam_loaded", "multicam_onnx")])
def test_onnx_matches_lerobot_eager_at_batch_1_and_n(request, loaded, artifact):
    ckpt, path = request.getfixturevalue(loaded), request.getfixturevalue(artifact)
    report = verify_artifacts(ckpt, [path], batch_sizes=[1, 5], samples=2, atol=1e-4, seed=11)
    check = report.checks[0]
    assert report.exit_code == 0, check
    assert [r.batch_size for r in check.results] == [1, 5]
    for r in check.results:
        assert r.stats.max_abs <= 1e-4 and r.stats.cosine > 0.999999 and r.stats.nonfinite == 0


def test_legacy_exporter_and_opset(small_loaded, tmp_path):
    from policy_export.export.onnx import export_onnx

    out = tmp_path / "legacy.onnx"
    res = export_onnx(small_loaded, out, exporter="legacy", opset=17)
    assert res.exporter == "legacy" and res.opset == 17
    assert inspect_artifact(out).metadata.exporter == "legacy"
    assert verify_artifacts(small_loaded, [out], batch_sizes=[3], samples=1).exit_code == 0


@pytest.mark.parametrize(("exporter", "opset"), [("dynamo", "17"), ("legacy", "99"), ("auto", "3")])
def test_unsupported_opset_is_refused(small_ckpt, tmp_path, exporter, opset):
    out = tmp_path / "x.onnx"
    res = runner.invoke(app, ["onnx", "-c", str(small_ckpt), "-o", str(out), "--exporter", exporter, "--opset", opset])
    assert res.exit_code == 2 and f"--opset {opset}" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_existing_output_needs_force(small_ckpt, small_onnx, tmp_path):
    out = tmp_path / "keep.onnx"
    shutil.copy(small_onnx, out)
    before = out.read_bytes()
    res = runner.invoke(app, ["onnx", "-c", str(small_ckpt), "-o", str(out)])
    assert res.exit_code == 2 and "--force" in res.output
    assert out.read_bytes() == before


def _perturbed_copy(src: Path, dst: Path, scale: float) -> Path:
    model = onnx.load(str(src))
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = onnx.numpy_helper.to_array(biggest).copy()
    arr += np.random.default_rng(0).normal(0, scale, arr.shape).astype(arr.dtype)
    biggest.CopyFrom(onnx.numpy_helper.from_array(arr, biggest.name))
    onnx.save(model, str(dst))
    return dst


def test_verify_cli_reports_and_fails_on_perturbed_weights(small_ckpt, small_onnx, tmp_path):
    bad = _perturbed_copy(small_onnx, tmp_path / "perturbed.onnx", scale=0.05)
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    res = runner.invoke(
        app,
        [
            "verify",
            "-c",
            str(small_ckpt),
            "-a",
            str(small_onnx),
            "-a",
            str(bad),
            "--batch-sizes",
            "1,2",
            "--samples",
            "1",
            "--report",
            str(report),
            "--junit",
            str(junit),
        ],
    )
    assert res.exit_code == 1, res.output
    data = json.loads(report.read_text())
    assert data["status"] == "failed" and data["exit_code"] == 1
    good, broken = data["checks"]
    assert good["status"] == "passed" and broken["status"] == "failed"
    for r in broken["results"]:
        s = r["stats"]
        assert s["max_abs"] > 1e-4 and s["min_passing_atol"] == pytest.approx(s["max_abs"])
        assert len(s["worst_index"]) == 4 and {"mean_abs", "p99_abs", "max_rel", "cosine"} <= set(s)
    root = ET.parse(junit).getroot()
    failures = root.findall(".//failure")
    assert len(failures) == 2 and "perturbed.onnx" in ET.tostring(root, encoding="unicode")
    # The same broken file passes if the user explicitly loosens its tolerance enough.
    loose = max(r["stats"]["max_abs"] for r in broken["results"]) * 2
    res = runner.invoke(
        app,
        [
            "verify",
            "-c",
            str(small_ckpt),
            "-a",
            str(bad),
            "--batch-sizes",
            "1,2",
            "--samples",
            "1",
            "--artifact-tolerance",
            f"perturbed.onnx={loose}",
        ],
    )
    assert res.exit_code == 0, res.output


def test_verify_refuses_artifact_of_another_policy(small_ckpt, multicam_onnx):
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(multicam_onnx)])
    assert res.exit_code == 2 and "does not match checkpoint" in " ".join(res.output.split())


def test_verify_refuses_foreign_onnx(small_ckpt, tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(g), str(path))
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(path)])
    assert res.exit_code == 2 and "no policy_export metadata" in res.output
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(tmp_path / "missing.onnx")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_verify_refuses_damaged_metadata_and_truncated_files(small_ckpt, small_onnx, small_torchscript, tmp_path):
    from policy_export.spec import METADATA_KEY

    model = onnx.load(str(small_onnx))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = '{"spec": {}}'  # a hand-edited or foreign record
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    model = onnx.load(str(small_onnx))
    del model.graph.node[len(model.graph.node) // 2]  # metadata intact, graph broken
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(small_torchscript.read_bytes()[:100_000])
    for path, fragment in (
        (damaged, "policy_export metadata is unreadable"),
        (truncated, "not a readable TorchScript"),
        (broken, "ONNX Runtime (CPUExecutionProvider) cannot load it"),
    ):
        res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(path)])
        assert res.exit_code == 2, res.output
        assert fragment in " ".join(res.output.split()) and "Traceback" not in res.output


def test_bad_batch_sizes_is_usage_error(small_ckpt, small_onnx):
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(small_onnx), "--batch-sizes", "0,x"])
    assert res.exit_code == 2


def test_bad_tolerances_and_outputs_exit_2_before_verifying(small_ckpt, small_onnx, tmp_path):
    cases = {
        "non-negative numbers": ["--tolerance", "-1"],
        "no --artifact is named 'smal.onnx'": ["--artifact-tolerance", "smal.onnx=1"],  # a typo must not pass silently
        "report is a directory": ["--report", str(tmp_path)],
    }
    for fragment, extra in cases.items():
        res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(small_onnx), *extra])
        assert res.exit_code == 2 and fragment in " ".join(res.output.split()), res.output
        assert "Parity vs LeRobot eager" not in res.output  # refused before any artifact ran


@pytest.mark.heavy  # make test's time budget (~18 s on a 2-core AVX2 machine); nox -s heavy runs it (test_packaging runs the installed console script)
def test_console_script_subprocess(small_ckpt, small_onnx, tmp_path):
    exe = Path(sys.executable).with_name("policy-export")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "verify" in out.stdout
    report = tmp_path / "sub.json"
    out = subprocess.run(
        [
            str(exe),
            "verify",
            "--checkpoint",
            str(small_ckpt),
            "--artifact",
            str(small_onnx),
            "--tolerance",
            "1e-4",
            "--batch-sizes",
            "1,3",
            "--samples",
            "1",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(report.read_text())["status"] == "passed"
    out = subprocess.run(
        [str(exe), "inspect", "--checkpoint", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and "does not exist" in out.stderr


@pytest.mark.parametrize("artifact", ["small_onnx", "small_torchscript"])
def test_runner_names_a_wrong_input_in_one_line(request, artifact, small_loaded):
    """A camera at another resolution, a wrong dtype or a missing input: one line, not a runtime trace."""
    from policy_export.errors import BadInputError
    from policy_export.inputs import random_inputs
    from policy_export.runners import open_runner

    feed = random_inputs(small_loaded.spec, 2, np.random.default_rng(0))
    with open_runner(request.getfixturevalue(artifact)) as run:
        assert run.infer(feed)["action_chunk"].shape == (2, 20, 5)
        c, h, w = small_loaded.spec.cameras[0].shape
        bad_cases = {
            "the image size is fixed at export": {**feed, "image": np.zeros((2, c, h + 32, w), np.float32)},
            "is float64, the artifact takes float32": {**feed, "state": feed["state"].astype(np.float64)},
            "missing input 'image'": {"state": feed["state"]},
            "has batch 1, the others 2": {**feed, "image": feed["image"][:1]},
        }
        for fragment, bad in bad_cases.items():
            with pytest.raises(BadInputError, match=fragment.replace("(", r"\(")):
                run.infer(bad)


def test_verify_skips_batch_sizes_an_artifact_cannot_run(small_loaded, small_onnx, monkeypatch):
    """A bounded artifact (a TensorRT plan's profile) asked for a larger batch: skipped up front, with the fix."""
    import policy_export.runners as runners_pkg
    from policy_export.runners.onnxrt import OnnxRuntimeRunner

    class ProfiledRunner(OnnxRuntimeRunner):  # real ONNX Runtime, with a plan-like batch profile [1, 2]
        def batch_range(self) -> tuple[int, int | None]:
            return 1, 2

    real_open = runners_pkg.open_runner

    def open_profiled(path, **kw):
        return ProfiledRunner(real_open(path, **kw).info)

    monkeypatch.setattr(runners_pkg, "open_runner", open_profiled)
    ok = verify_artifacts(small_loaded, [small_onnx], batch_sizes=[1, 2], samples=1)
    assert ok.exit_code == 0 and [r.batch_size for r in ok.checks[0].results] == [1, 2]
    report = verify_artifacts(small_loaded, [small_onnx], batch_sizes=[1, 4], samples=1)
    check = report.checks[0]
    assert report.exit_code == 2 and check.status == "skipped" and not check.results
    assert "batch sizes [4] are outside" in check.reason and "--max-batch" in check.reason


def test_identical_initializers_shared_and_the_streamed_save_writes_protobufs_bytes(tmp_path):
    """Byte-identical initializers (raw or typed storage) become one, in the Loop body too;
    same shape and dtype but other values stay apart. The export's streamed save (one node or
    tensor encoded at a time) writes exactly the bytes ``SerializeToString`` makes. Runs the
    result through ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from policy_export.export.onnx import _share_identical_initializers, save_streamed

    ones = np.ones((4,), np.float32)
    twos = np.full((4,), 2.0, np.float32)
    inits = [
        numpy_helper.from_array(ones, "a"),
        helper.make_tensor("a_typed", TensorProto.FLOAT, [4], ones.tolist()),  # same values, typed fields
        numpy_helper.from_array(twos, "b"),  # same shape and dtype, other values
    ]
    body = helper.make_graph(
        [
            helper.make_node("Add", ["x_in", "a_typed"], ["x1"]),
            helper.make_node("Mul", ["x1", "b"], ["x2"]),
            helper.make_node("Add", ["x2", "a"], ["x_out"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [4]),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [*inits, numpy_helper.from_array(np.array(3, np.int64), "n")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    x = np.arange(4, dtype=np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    _share_identical_initializers(model)

    assert sorted(i.name for i in model.graph.initializer) == ["a", "b", "n"]
    body_inputs = [i for n in model.graph.node[0].attribute[0].g.node for i in n.input]
    assert "a_typed" not in body_inputs and body_inputs.count("a") == 2 and "b" in body_inputs
    onnx.checker.check_model(model, full_check=True)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)

    # A large raw tensor, typed fields, a subgraph, doc strings and metadata: the same bytes.
    big = np.random.default_rng(0).standard_normal((300, 257)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(big, "big"))
    model.graph.value_info.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, [300, 257]))
    model.graph.doc_string = "a graph"
    model.doc_string = "a model"
    model.producer_name = "policy-export"
    helper.set_model_props(model, {"policy_type": "act", "chunk_size": "10"})
    save_streamed(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == model.SerializeToString()
