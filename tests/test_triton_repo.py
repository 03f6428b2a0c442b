"""Triton model repositories, offline: config contents, versions, refusals, atomicity, --check.

Every config is read back with Triton's own schema (tritonclient's ``model_config_pb2``) and
compared with the artifact file itself, never with constants. The real server loads these
repositories in test_triton_server.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb
from typer.testing import CliRunner

from policy_export.artifacts import inspect_artifact
from policy_export.cli.app import app
from policy_export.errors import BadInputError
from policy_export.spec import ArtifactMetadata
from policy_export.triton import repo as repo_mod
from policy_export.triton.options import TritonOptions
from policy_export.triton.repo import write_version
from policy_export.triton.validate import check_repository

runner = CliRunner()


def triton_repo(*args: object) -> object:
    return runner.invoke(app, ["triton-repo", *map(str, args)])


def read_config(model_dir: Path) -> pb.ModelConfig:
    cfg = pb.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), cfg)
    return cfg


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under root (hidden ones too) with inode, mtime and a content digest."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).digest())
    return out


def params(cfg: pb.ModelConfig) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def test_onnx_config_comes_from_the_artifact_signature(small_onnx, tmp_path):
    res = triton_repo(
        "--artifact", small_onnx, "--repo", tmp_path / "repo", "--model", "act", "--version", "1",
        "--max-batch-size", "8", "--preferred-batch-sizes", "4,8", "--max-queue-delay-us", "700",
        "--instance-count", "2", "--version-policy", "all",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    model_dir = tmp_path / "repo" / "act"
    assert (model_dir / "1" / "model.onnx").read_bytes() == small_onnx.read_bytes()
    cfg = read_config(model_dir)
    info = inspect_artifact(small_onnx)

    assert (cfg.name, cfg.platform, cfg.backend) == ("act", "onnxruntime_onnx", "onnxruntime")
    assert cfg.max_batch_size == 8
    got_in = [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input]
    want_in = [(s.name, "TYPE_FP32", list(s.shape[1:])) for s in info.inputs]
    assert got_in == want_in and [t[0] for t in got_in] == ["state", "image"]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [(s.name, list(s.shape[1:])) for s in info.outputs]
    spec = info.metadata.spec
    assert list(cfg.output[0].dims) == [spec.chunk_size, spec.action_dim]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 700
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]
    assert cfg.version_policy.WhichOneof("policy_choice") == "all"
    # Warm-up: random data at batch 1 and at the max batch, for exactly the model's inputs.
    assert [(w.batch_size, w.count) for w in cfg.model_warmup] == [(1, 1), (8, 1)]
    for w in cfg.model_warmup:
        assert {k: (v.data_type, list(v.dims), v.random_data) for k, v in w.inputs.items()} == {
            t.name: (t.data_type, list(t.dims), True) for t in cfg.input
        }
    p = params(cfg)
    assert p["chunk_size"] == str(spec.chunk_size) and p["n_action_steps"] == str(spec.n_action_steps)
    assert json.loads(p["host"])["ensemble_coeff"] is None and spec.host.ensemble_coeff is None
    assert "temporal_ensemble_coeff" not in p and json.loads(p["family"]) == spec.family == {}
    assert p["normalization_hash"] == p["version.1.normalization_hash"] == spec.norm_hash
    assert p["image_format"] == "float32" and p["input_names"] == "state,image" and p["output_names"] == "action_chunk"
    assert ArtifactMetadata.from_json(p["version.1.metadata"]) == info.metadata
    assert not cfg.HasField("optimization")
    # The header tells a human what to send; it is a comment, so the schema parse above ignored it.
    assert "state TYPE_FP32 [6], image TYPE_FP32 [3, 96, 128]" in (model_dir / "config.pbtxt").read_text()


def test_multicam_and_uint8_signatures(multicam_onnx, small_uint8_onnx, tmp_path):
    repo = tmp_path / "repo"
    write_version(multicam_onnx, repo, "multi", 1)
    write_version(small_uint8_onnx, repo, "frames", 1, TritonOptions(max_batch_size=4))
    multi = read_config(repo / "multi")
    spec = inspect_artifact(multicam_onnx).metadata.spec
    assert [(t.name, list(t.dims)) for t in multi.input] == [
        ("state", [spec.state_dim]),
        *((c.input_name, list(c.shape)) for c in spec.cameras),
    ]
    assert [c["input_name"] for c in json.loads(params(multi)["cameras"])] == ["image_top", "image_wrist"]

    frames = read_config(repo / "frames")
    image = frames.input[1]
    assert (image.name, image.data_type, list(image.dims)) == ("image", pb.TYPE_UINT8, [96, 128, 3])
    assert frames.input[0].data_type == pb.TYPE_FP32
    assert params(frames)["image_format"] == "uint8"
    assert [w.batch_size for w in frames.model_warmup] == [1, 4]
    assert all(w.inputs["image"].data_type == pb.TYPE_UINT8 for w in frames.model_warmup)


def test_torchscript_gets_libtorch_index_names(small_torchscript, small_onnx, tmp_path):
    res = write_version(small_torchscript, tmp_path / "repo", "ts", 1)
    cfg = read_config(res.model_dir)
    assert (cfg.platform, cfg.backend) == ("pytorch_libtorch", "pytorch")
    assert (res.model_dir / "1" / "model.pt").read_bytes() == small_torchscript.read_bytes()
    assert [t.name for t in cfg.input] == ["state__0", "image__1"]
    assert [t.name for t in cfg.output] == ["action_chunk__0"]
    p = params(cfg)
    assert (p["input_names"], p["policy_input_names"]) == ("state__0,image__1", "state,image")
    assert p["naming_convention"] == "name__index"
    # The index is the positional argument: feeding model.pt by index reproduces the ONNX model.
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(3)
    feed = {"state": rng.standard_normal((2, 6), dtype=np.float32), "image": rng.random((2, 3, 96, 128), np.float32)}
    module = torch.jit.load(str(res.model_dir / "1" / "model.pt"))
    by_index = sorted(cfg.input, key=lambda t: int(t.name.rsplit("__", 1)[1]))
    with torch.no_grad():
        got = module(*(torch.from_numpy(feed[t.name.rsplit("__", 1)[0]]) for t in by_index)).numpy()
    want = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_tensorrt_plan_config_from_sidecar(small_onnx, tmp_path):
    """No TensorRT here: a stand-in plan file with a real sidecar checks the config side only."""
    meta = inspect_artifact(small_onnx).metadata
    meta.artifact_kind = "tensorrt"
    plan = tmp_path / "policy.plan"
    plan.write_bytes(b"not a real engine: the config is generated from the sidecar metadata")
    sidecar = {"metadata": json.loads(meta.to_json()), "tensorrt": {"profile": {"min": 1, "opt": 4, "max": 8}}}
    (tmp_path / "policy.plan.json").write_text(json.dumps(sidecar))

    res = write_version(plan, tmp_path / "repo", "trt", 1)
    cfg = read_config(res.model_dir)
    assert cfg.platform == "tensorrt_plan" and cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert [t.name for t in cfg.input] == ["state", "image"] and list(cfg.input[1].dims) == [3, 96, 128]
    assert (res.model_dir / "1" / "model.plan").exists() and (res.model_dir / "1" / "model.plan.json").exists()

    bad = triton_repo("-a", plan, "--repo", tmp_path / "repo2", "--model", "trt", "--max-batch-size", "16")
    assert bad.exit_code == 2 and "profile max 8" in bad.output
    cpu = triton_repo("-a", plan, "--repo", tmp_path / "repo2", "--model", "trt", "--kind", "cpu")
    assert cpu.exit_code == 2 and "only runs on a GPU" in cpu.output
    assert not (tmp_path / "repo2" / "trt").exists()


def test_python_backend_model_and_ort_accelerator(small_onnx, tmp_path):
    res = triton_repo("-a", small_onnx, "--repo", tmp_path / "repo", "--model", "py", "--backend", "python")
    assert res.exit_code == 0, res.output
    vdir = tmp_path / "repo" / "py" / "1"
    assert sorted(p.name for p in vdir.iterdir()) == ["model.onnx", "model.py"]
    assert "class TritonPythonModel" in (vdir / "model.py").read_text()
    assert read_config(tmp_path / "repo" / "py").backend == "python"

    no_gpu = triton_repo("-a", small_onnx, "--repo", tmp_path / "repo", "--model", "trt", "--ort-trt", "fp16")
    assert no_gpu.exit_code == 2 and "--kind gpu" in no_gpu.output
    ok = triton_repo(
        "-a", small_onnx, "--repo", tmp_path / "repo", "--model", "trt", "--ort-trt", "fp16", "--kind", "gpu"
    )
    assert ok.exit_code == 0, ok.output
    cfg = read_config(tmp_path / "repo" / "trt")
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU


def test_versions_add_refuse_and_force(small_onnx, small_fp16_onnx, small_uint8_onnx, multicam_onnx, tmp_path):
    repo = tmp_path / "repo"
    assert triton_repo("-a", small_onnx, "--repo", repo, "--model", "act", "--version", "1").exit_code == 0
    v1 = snapshot(repo / "act" / "1")

    res = triton_repo("-a", small_fp16_onnx, "--repo", repo, "--model", "act", "--version", "2")
    assert res.exit_code == 0, res.output
    assert snapshot(repo / "act" / "1") == v1, "adding version 2 must leave version 1 untouched"
    p = params(read_config(repo / "act"))
    assert (p["versions"], p["version.1.precision"], p["version.2.precision"]) == ("1,2", "fp32", "fp16")

    again = triton_repo("-a", small_onnx, "--repo", repo, "--model", "act", "--version", "2")
    assert again.exit_code == 2 and "version 2 of act exists" in again.output and "--force" in again.output
    forced = triton_repo("-a", small_onnx, "--repo", repo, "--model", "act", "--version", "2", "--force")
    assert forced.exit_code == 0, forced.output
    assert (repo / "act" / "2" / "model.onnx").read_bytes() == small_onnx.read_bytes()
    assert params(read_config(repo / "act"))["version.2.precision"] == "fp32"
    assert snapshot(repo / "act" / "1") == v1

    before = snapshot(repo)
    frames = triton_repo("-a", small_uint8_onnx, "--repo", repo, "--model", "act", "--version", "3")
    assert frames.exit_code == 2
    assert "input image: data type TYPE_FP32 in the config vs TYPE_UINT8" in frames.output
    assert "dims [3, 96, 128] in the config vs [96, 128, 3]" in frames.output and "new --model" in frames.output
    multi = triton_repo("-a", multicam_onnx, "--repo", repo, "--model", "act", "--version", "3")
    assert multi.exit_code == 2 and "input names ['state', 'image'] in the config vs" in multi.output
    python = triton_repo("-a", small_onnx, "--repo", repo, "--model", "act", "--version", "3", "--backend", "python")
    assert python.exit_code == 2 and "one model has one backend" in python.output
    assert snapshot(repo) == before


@pytest.mark.parametrize("where", ["copy", "validation", "swap", "interrupt"])
def test_interrupted_write_leaves_repository_as_it_was(small_onnx, small_fp16_onnx, tmp_path, monkeypatch, where):
    repo = tmp_path / "repo"
    write_version(small_onnx, repo, "act", 1)
    before, siblings = snapshot(repo), sorted(p.name for p in tmp_path.iterdir())

    if where == "copy":  # the artifact copy dies half-way through
        real_copy = shutil.copy2

        def failing_copy(src, dst, *a, **k):
            real_copy(src, dst, *a, **k)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(repo_mod.shutil, "copy2", failing_copy)
        expected: type[BaseException] = OSError
    elif where == "validation":  # the staged model fails the offline check
        monkeypatch.setattr(repo_mod, "check_model", lambda d, expected_name=None: _failing_report(d))
        expected = BadInputError
    elif where == "swap":  # the rename that puts the new folder in place fails
        real_replace, calls = os.replace, []

        def failing_replace(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(5, "I/O error")
            return real_replace(src, dst)

        monkeypatch.setattr(repo_mod.os, "replace", failing_replace)
        expected = OSError
    else:  # Ctrl-C while the config is being written
        monkeypatch.setattr(repo_mod, "render", _interrupt)
        expected = KeyboardInterrupt

    with pytest.raises(expected):
        write_version(small_fp16_onnx, repo, "act", 2, TritonOptions(version_policy="all"))
    assert snapshot(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings, "no staging folder left behind"
    assert all(r.ok for r in check_repository(repo))


def _failing_report(model_dir: Path) -> object:
    from policy_export.triton.validate import ModelReport

    return ModelReport(name="act", path=model_dir, problems=["simulated validation failure"])


def _interrupt(*args: object, **kwargs: object) -> str:
    raise KeyboardInterrupt


def test_external_data_travels_with_the_model(small_onnx, tmp_path):
    import onnx
    import onnxruntime as ort

    src = tmp_path / "ext" / "policy.onnx"
    src.parent.mkdir()
    onnx.save(onnx.load(str(small_onnx)), str(src), save_as_external_data=True, location="policy.onnx.data")
    res = write_version(src, tmp_path / "repo", "ext", 1)
    vdir = res.model_dir / "1"
    assert sorted(p.name for p in vdir.iterdir()) == ["model.onnx", "policy.onnx.data"]
    rng = np.random.default_rng(5)
    feed = {"state": rng.standard_normal((2, 6), dtype=np.float32), "image": rng.random((2, 3, 96, 128), np.float32)}

    def run(path: Path) -> np.ndarray:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]

    np.testing.assert_array_equal(run(vdir / "model.onnx"), run(small_onnx))
    (src.parent / "policy.onnx.data").unlink()
    res = triton_repo("-a", src, "--repo", tmp_path / "repo", "--model", "ext2")
    assert res.exit_code == 2 and "external data file policy.onnx.data is missing" in res.output


@pytest.fixture
def valid_repo(small_onnx, small_torchscript, tmp_path) -> Path:
    repo = tmp_path / "repo"
    write_version(small_onnx, repo, "act", 1, TritonOptions(preferred_batch_sizes=(4, 8)))
    write_version(small_torchscript, repo, "ts", 1)
    return repo


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


BROKEN = {
    "preferred batch size above max": ("act", "preferred_batch_size: [4, 8]", "preferred_batch_size: [4, 16]", "preferred_batch_size 16 is outside 1..max_batch_size 8"),
    "batching without max batch": ("act", "max_batch_size: 8", "max_batch_size: 0", "dynamic_batching needs max_batch_size > 0"),
    "warmup input not a model input": ("act", 'key: "state"', 'key: "states"', "must be exactly the model inputs"),
    "warmup dims differ": ("act", "dims: [6]\n      random_data", "dims: [7]\n      random_data", "input state dims [7] differ"),
    "unknown field": ("act", "max_batch_size: 8", "max_batch: 8", "not a valid Triton ModelConfig"),
    "misspelled enum": ("act", "data_type: TYPE_FP32", "data_type: TYPE_FLOAT32", "not a valid Triton ModelConfig"),
    "dims differ from the artifact": ("act", "dims: [3, 96, 128]\n}", "dims: [3, 96, 129]\n}", "version 1: input image: dims [3, 96, 129] in the config vs [3, 96, 128] in 1/model.onnx"),
    "name differs from folder": ("act", 'name: "act"', 'name: "other"', 'differs from the folder name "act"'),
    "field newer than the 2.51 server": ("act", "max_batch_size: 8", "max_batch_size: 8\nmodel_metrics {}", "not known to Triton 2.51"),
    "libtorch name without index": ("ts", 'name: "action_chunk__0"', 'name: "action_chunk"', "pytorch_libtorch needs <name>__<index>"),
    "version policy names a missing version": ("act", "latest {\n    num_versions: 1\n  }", "specific {\n    versions: [1, 3]\n  }", "versions [3] that have no folder"),
}  # fmt: skip


def test_check_accepts_what_was_written(valid_repo):
    res = triton_repo("--check", valid_repo)
    assert res.exit_code == 0, res.output
    assert "2 model(s) ok" in res.output


@pytest.mark.parametrize("case", list(BROKEN))
def test_check_catches_broken_configs(valid_repo, case):
    model, old, new, message = BROKEN[case]
    _edit(valid_repo / model / "config.pbtxt", old, new)
    res = triton_repo("--check", valid_repo)
    assert res.exit_code == 2, res.output
    assert message in res.output.replace("\n", " ") or message in res.output, res.output


def test_check_catches_missing_and_changed_model_files(valid_repo, small_fp16_onnx):
    (valid_repo / "ts" / "1" / "model.pt").unlink()
    # Same signature, different file: only the digest recorded at write time notices.
    (valid_repo / "act" / "1" / "model.onnx").unlink()
    shutil.copy(small_fp16_onnx, valid_repo / "act" / "1" / "model.onnx")
    res = triton_repo("--check", valid_repo)
    assert res.exit_code == 2
    assert "1/model.pt is missing" in res.output and "changed after the config was written" in res.output


def test_cli_usage_errors(small_onnx, tmp_path):
    repo = tmp_path / "repo"
    cases = [
        (["--repo", repo, "--model", "a"], "missing --artifact"),
        (["-a", small_onnx, "--repo", repo, "--model", "a", "--preferred-batch-sizes", "4,16"], "between 1 and --max-batch-size 8"),
        (["-a", small_onnx, "--repo", repo, "--model", "a", "--version-policy", "newest"], "latest:N"),
        (["-a", small_onnx, "--repo", repo, "--model", "a/b"], "--model"),
        (["-a", small_onnx, "--repo", repo, "--model", "a", "--version", "0"], "integers >= 1"),
        (["--check", repo, "--model", "a"], "--check takes only a folder"),
        (["-a", tmp_path / "missing.onnx", "--repo", repo, "--model", "a"], "does not exist"),
    ]  # fmt: skip
    for args, message in cases:
        res = triton_repo(*args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    assert not (repo / "a").exists()
    assert not repo.exists(), "a refused write must not leave an empty repository folder behind"
    specific = triton_repo(
        "-a", small_onnx, "--repo", repo, "--model", "s", "--version-policy", "specific:1", "--no-warmup"
    )
    assert specific.exit_code == 0, specific.output
    cfg = read_config(repo / "s")
    assert list(cfg.version_policy.specific.versions) == [1] and not cfg.model_warmup


def test_templates_ship_in_the_wheel(tmp_path):
    """model_repository_templates/ is package data: present in a built wheel, found via importlib.resources."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("policy_export-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("config.pbtxt.tmpl", "ort_model.py", "onnxruntime_stand_in.py"):
        assert f"policy_export_triton_templates/{f}" in names, sorted(n for n in names if "templates" in n)
    assert "policy_export/triton/server.py" in names


def test_ensembling_and_per_version_parameters(small_onnx):
    """The host declaration (ensembling) and per-version values reach the parameters a client reads."""
    import dataclasses

    from policy_export.triton.backends import backend_for
    from policy_export.triton.config import build_config

    info = inspect_artifact(small_onnx)
    from policy_export.spec import HostDecl

    ensembling = dataclasses.replace(
        info.metadata.spec, n_action_steps=1, host=HostDecl(ensemble_coeff=0.01), norm_hash="abc"
    )
    v2 = dataclasses.replace(info, metadata=dataclasses.replace(info.metadata, spec=ensembling))
    cfg, _ = build_config("act", {1: info, 2: v2}, backend_for("onnx"), TritonOptions())
    p = params(cfg)
    coeff = {k: json.loads(v)["ensemble_coeff"] for k, v in p.items() if k.endswith("host")}
    assert (coeff["host"], p["n_action_steps"], p["normalization_hash"]) == (0.01, "1", "abc")
    assert (coeff["version.1.host"], p["version.1.n_action_steps"]) == (None, "10")
    assert coeff["version.2.host"] == 0.01
    assert ArtifactMetadata.from_json(p["version.2.metadata"]).spec == ensembling


def test_check_flags_leftover_staging_folder(valid_repo):
    """Triton loads every folder in a repository, hidden ones too; a crashed write's leftover is an error."""
    (valid_repo / ".act.x1y2.partial" / "1").mkdir(parents=True)
    res = triton_repo("--check", valid_repo)
    assert res.exit_code == 2 and "left over from an interrupted write" in res.output


def test_options_read_back_from_the_config_they_wrote(small_onnx):
    """TritonOptions.from_config inverts build_config: a new version can start from the model's own settings."""
    import dataclasses

    from policy_export.triton.backends import backend_for
    from policy_export.triton.config import build_config

    info = inspect_artifact(small_onnx)
    for opts in (
        TritonOptions(),
        TritonOptions(
            backend="python", max_batch_size=4, preferred_batch_sizes=(2, 4), max_queue_delay_us=900,
            instance_count=3, kind="gpu", warmup=False, version_policy="specific:1,2", ort_trt="fp16",
        ),
    ):  # fmt: skip
        spec = backend_for("onnx", opts.backend)
        cfg, _ = build_config("act", {1: info}, spec, opts)
        assert TritonOptions.from_config(cfg) == dataclasses.replace(opts, kind=opts.resolved_kind(spec))


def test_new_version_keeps_the_models_serving_options(small_onnx, small_fp16_onnx, tmp_path):
    """Options not given again keep the config's values: version_policy all must not fall back to latest:1."""
    repo = tmp_path / "repo"
    first = triton_repo(
        "-a", small_onnx, "--repo", repo, "--model", "act", "--backend", "python", "--max-batch-size", "4",
        "--preferred-batch-sizes", "2,4", "--instance-count", "2", "--no-warmup", "--version-policy", "all",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    before = read_config(repo / "act")
    second = triton_repo("-a", small_fp16_onnx, "--repo", repo, "--model", "act", "--version", "2")
    assert second.exit_code == 0, second.output
    after = read_config(repo / "act")
    for name in ("backend", "max_batch_size", "dynamic_batching", "instance_group", "model_warmup", "version_policy"):
        assert getattr(after, name) == getattr(before, name), name
    assert after.version_policy.WhichOneof("policy_choice") == "all" and "version policy all" in second.output
    third = triton_repo(
        "-a", small_onnx, "--repo", repo, "--model", "act", "--version", "3", "--version-policy", "latest:2"
    )
    assert third.exit_code == 0, third.output
    cfg = read_config(repo / "act")
    assert cfg.version_policy.latest.num_versions == 2 and cfg.max_batch_size == 4 and cfg.backend == "python"
