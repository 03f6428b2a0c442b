"""``policy-export quantize``: bf16 and int8 CPU artifacts of the small policy, run by their real runtimes and
judged by verify against LeRobot eager per action dimension; the robot runtime runs them without torch.

The small policy (random weights, 96x128 camera) errs more under int8 than the demo policy: measured 2.6-4.7% of
an action std (OpenVINO and ONNX Runtime, several seeds), against 1.5% for the demo policy (BENCHMARKS.md). Its int8
rows are therefore judged at ``--tolerance-std 0.06``; bf16 (1.2%) at its default 0.015. Calibrating on black
frames must fail that same gate: the gate can tell a calibration that fits the robot's frames from one that does not.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_runtime_shim import run_blocked
from typer.testing import CliRunner

from policy_export.artifacts import inspect_artifact
from policy_export.cli.app import app
from policy_export.cpu import cpu_info, precision_gain_warning
from policy_export.enums import Status
from policy_export.frames import image_stats, synthetic_frame
from policy_export.quantize.run import quantize
from policy_export.verify import verify_artifacts

SMALL_INT8_TOLERANCE_STD = 0.06
needs_bf16 = pytest.mark.skipif(not cpu_info().bf16, reason="this CPU has neither avx512_bf16 nor amx_bf16")


@pytest.fixture(scope="module")
def int8_onnx(small_loaded, small_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "small-int8.onnx"
    quantize(small_loaded, small_onnx, out, precision="int8", runtime="onnxruntime", samples=8)
    return out


@pytest.fixture(scope="module")
def bf16_xml(small_loaded, small_onnx, tmp_path_factory) -> Path:
    if not cpu_info().bf16:
        pytest.skip("this CPU has neither avx512_bf16 nor amx_bf16")
    out = tmp_path_factory.mktemp("q") / "small-bf16.xml"
    quantize(small_loaded, small_onnx, out, precision="bf16")
    return out


def write_dataset(root: Path, spec, frames: list[np.ndarray], states: np.ndarray, shape_override=None) -> Path:
    """A LeRobotDataset v3.0 folder as LeRobot writes one with images embedded (no videos):
    meta/info.json, and data/chunk-000/file-000.parquet with {bytes, path} image cells."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    cam = spec.cameras[0]
    c, h, w = cam.shape
    info = {
        "codebase_version": "v3.0",
        "fps": 30,
        "total_episodes": 2,
        "total_frames": len(frames),
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": {
            spec.state_key: {"dtype": "float32", "shape": [spec.state_dim], "names": None},
            cam.key: {"dtype": "image", "shape": shape_override or [h, w, c], "names": ["height", "width", "channels"]},
            spec.action_key: {"dtype": "float32", "shape": [spec.action_dim], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    cells = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.rint(f.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)).save(buf, "PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    n = len(frames)
    table = pa.table(
        {
            spec.state_key: [list(map(float, s)) for s in states],
            cam.key: cells,
            "timestamp": [float(i % (n // 2)) / 30 for i in range(n)],
            "episode_index": [i // (n // 2) for i in range(n)],
        }
    )
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(table, root / "data" / "chunk-000" / "file-000.parquet")
    return root


def _dataset(small_loaded, root: Path, black: bool = False, shape_override=None) -> Path:
    spec = small_loaded.spec
    cam = spec.cameras[0]
    rng = np.random.default_rng(3)
    stats = image_stats(small_loaded.input_stats, cam.key, 3)
    frames = [np.zeros(cam.shape, np.float32) if black else synthetic_frame(rng, cam.shape, stats) for _ in range(8)]
    states = np.zeros((8, spec.state_dim)) if black else rng.standard_normal((8, spec.state_dim))
    return write_dataset(root, spec, frames, states, shape_override)


def test_int8_artifact_is_quantized_and_records_where(int8_onnx):
    import onnx

    info = inspect_artifact(int8_onnx)
    meta = info.metadata
    assert (info.kind, meta.precision) == ("onnx", "int8")
    ops = {n.op_type for n in onnx.load(str(int8_onnx)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really QDQ, not a copy of the fp32 graph
    q = meta.quantization
    assert q["runtime"] == "onnxruntime" and q["calibration"]["samples"] == 8
    assert q["cpu"]["flags"] == cpu_info().record()["flags"] and q["cpu"]["vnni"] == cpu_info().vnni
    assert q["measured"]["fp32_onnxruntime_ms"] > 0 and q["measured"]["ms"] > 0
    assert q["float_scopes"] == ["decoder", "action_head"]


@needs_bf16
def test_verify_judges_each_action_dimension_against_its_std(small_loaded, int8_onnx, bf16_xml):
    report = verify_artifacts(small_loaded, [bf16_xml], batch_sizes=[1, 2], samples=1)
    (check,) = report.checks
    assert check.runner == "openvino-cpu-bf16" and check.tolerance_std == 0.015 and check.inputs == "frames"
    assert check.status == Status.PASSED, [(r.worst_frac_std, r.stats.max_abs) for r in check.results]
    std = np.asarray(report.extra["action_std"])
    for r in check.results:
        assert len(r.dims) == small_loaded.spec.action_dim
        robot = r.robot_units or r.stats  # the gate's statistics are in the normalized space by default
        assert max(d.max_abs for d in r.dims) == pytest.approx(robot.max_abs)
        np.testing.assert_allclose([d.max_frac_std for d in r.dims], [d.max_abs for d in r.dims] / std)
        assert 0 < r.worst_frac_std <= 0.015
    report = verify_artifacts(
        small_loaded, [int8_onnx], batch_sizes=[1], samples=2, tolerance_std=SMALL_INT8_TOLERANCE_STD
    )
    assert report.checks[0].status == Status.PASSED, report.checks[0].results[0].worst_frac_std


def test_calibration_from_a_dataset_and_black_frames_fail_the_gate(small_loaded, small_onnx, tmp_path):
    good = tmp_path / "good.onnx"
    res = quantize(
        small_loaded,
        small_onnx,
        good,
        precision="int8",
        runtime="onnxruntime",
        calibration=_dataset(small_loaded, tmp_path / "ds"),
    )
    assert res.calibration["source"] == "LeRobotDataset ds" and res.calibration["samples"] == 8
    bad = tmp_path / "black.onnx"
    black = _dataset(small_loaded, tmp_path / "k", True)
    quantize(small_loaded, small_onnx, bad, precision="int8", runtime="onnxruntime", calibration=black)
    report = verify_artifacts(
        small_loaded, [good, bad], batch_sizes=[1], samples=2, tolerance_std=SMALL_INT8_TOLERANCE_STD
    )
    assert [c.status for c in report.checks] == [Status.PASSED, Status.FAILED], [
        c.results[0].worst_frac_std for c in report.checks
    ]


def _cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["quantize", *args], env=env)


def test_bad_input_is_one_line_and_exit_2(small_ckpt, small_onnx, int8_onnx, tmp_path):
    base = ["-c", str(small_ckpt), "-a", str(small_onnx)]
    (tmp_path / "empty").mkdir()
    mismatched = _dataset_folder_with_wrong_shape(small_ckpt, tmp_path / "wrong")
    cases = [
        (["--precision", "bf16", "--runtime", "onnxruntime", "-o", str(tmp_path / "a.onnx")], None, "no bfloat16"),
        (
            ["--precision", "bf16", "-o", str(tmp_path / "b.xml")],
            {"POLICY_EXPORT_CPU_FLAGS": "avx2 fma"},
            "neither avx512_bf16 nor amx_bf16",
        ),
        (
            [
                "--precision",
                "int8",
                "--runtime",
                "onnxruntime",
                "--calibration",
                str(tmp_path / "empty"),
                "-o",
                str(tmp_path / "c.onnx"),
            ],
            None,
            "not a LeRobotDataset",
        ),
        (
            [
                "--precision",
                "int8",
                "--runtime",
                "onnxruntime",
                "--calibration",
                str(mismatched),
                "-o",
                str(tmp_path / "d.onnx"),
            ],
            None,
            "features do not match",
        ),
        (["--precision", "int8", "--runtime", "onnxruntime", "-o", str(tmp_path / "e.xml")], None, "writes ONNX"),
        (["--precision", "int8", "-o", str(tmp_path / "f.onnx")], None, "int8 of act defaults to --runtime openvino"),
    ]
    old = tmp_path / "old"
    (old / "meta").mkdir(parents=True)
    (old / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "features": {}}))
    garbled = tmp_path / "garbled"
    (garbled / "meta").mkdir(parents=True)
    (garbled / "meta" / "info.json").write_text("{not json")
    cases += [
        (
            [
                "--precision",
                "int8",
                "--runtime",
                "onnxruntime",
                "--calibration",
                str(old),
                "-o",
                str(tmp_path / "h.onnx"),
            ],
            None,
            "format v2.1",
        ),
        (
            [
                "--precision",
                "int8",
                "--runtime",
                "onnxruntime",
                "--calibration",
                str(garbled),
                "-o",
                str(tmp_path / "i.onnx"),
            ],
            None,
            "not a LeRobotDataset info.json",
        ),
    ]
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not onnx at all")
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    other_tool = tmp_path / "other-tool.onnx"
    onnx.save(helper.make_model(graph), str(other_tool))
    for artifact, message in (
        (int8_onnx, "takes an fp32 ONNX artifact from policy-export onnx; this is onnx int8"),
        (foreign, "not a readable ONNX file"),
        (other_tool, "ONNX file has no policy_export metadata"),
    ):
        out = "j.onnx"
        rt = ["--runtime", "onnxruntime"]
        cases.append((["-a", str(artifact), "--precision", "int8", *rt, "-o", str(tmp_path / out)], None, message))
    for extra, env, message in cases:
        res = _cli(*base, *extra, env=env)  # a later -a replaces the base's
        assert res.exit_code == 2, (extra, res.output)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], (extra, res.output)
    leftover = sorted(p.name for p in tmp_path.iterdir())
    assert leftover == ["empty", "foreign.onnx", "garbled", "old", "other-tool.onnx", "wrong"]  # nothing written


def _dataset_folder_with_wrong_shape(small_ckpt: Path, root: Path) -> Path:
    from policy_export.checkpoint import load_checkpoint

    return _dataset(load_checkpoint(small_ckpt), root, shape_override=[48, 64, 3])


@needs_bf16
def test_robot_runtime_runs_quantized_artifacts_without_torch(small_loaded, int8_onnx, bf16_xml, tmp_path):
    from policy_export.runners import open_runner

    spec = small_loaded.spec
    cam = spec.cameras[0]
    frame = synthetic_frame(
        np.random.default_rng(1),
        cam.shape,
        __import__("policy_export.frames").frames.image_stats(small_loaded.input_stats, cam.key, 3),
    )
    state = np.linspace(-1, 1, spec.state_dim).astype(np.float32)
    np.save(tmp_path / "state.npy", state)
    np.save(tmp_path / "frame.npy", frame)
    for artifact in (int8_onnx, bf16_xml):
        proc = run_blocked(
            f"""
            import numpy as np
            from policy_export.runtime import PolicyClient
            obs = {{{spec.state_key!r}: np.load({str(tmp_path / "state.npy")!r}), {cam.key!r}: np.load({str(tmp_path / "frame.npy")!r})}}
            with PolicyClient.from_artifact({str(artifact)!r}) as client:
                np.save({str(tmp_path / "chunk.npy")!r}, client.predict_chunk(obs))
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lerobot", "nncf"))
            assert not heavy, heavy
            """,
            ("torch", "lerobot", "nncf"),
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        with open_runner(artifact) as runner:
            want = runner.infer({"state": state[None], "image": frame[None]})["action_chunk"]
        np.testing.assert_array_equal(np.load(tmp_path / "chunk.npy"), want)


def test_precision_warnings_follow_the_cpu_flags(monkeypatch):
    monkeypatch.setenv("POLICY_EXPORT_CPU_FLAGS", "avx2 fma")
    info = cpu_info()
    assert info.overridden and not info.vnni and not info.bf16
    assert "avx512_bf16" in (precision_gain_warning("bf16", info) or "")
    assert "VNNI" in (precision_gain_warning("int8", info) or "")
    monkeypatch.setenv("POLICY_EXPORT_CPU_FLAGS", "avx512f avx512_vnni avx512_bf16")
    assert precision_gain_warning("bf16") is None and precision_gain_warning("int8") is None
    assert os.environ["POLICY_EXPORT_CPU_FLAGS"].startswith("avx512f")


@needs_bf16
def test_triton_serves_them_natively_configured_and_through_python(small_loaded, int8_onnx, bf16_xml, tmp_path):
    """The native OpenVINO config (served here by its stand-in) and the Python-backend model, on a real server."""
    from test_triton_server import infer
    from triton_harness import triton_server

    from policy_export.runners import open_runner
    from policy_export.triton.validate import check_model

    repo = tmp_path / "repo"
    writes = [
        (bf16_xml, "act_bf16", []),
        (bf16_xml, "act_bf16_py", ["--backend", "python"]),
        (int8_onnx, "act_int8", []),
    ]
    for artifact, name, extra in writes:
        res = CliRunner().invoke(
            app, ["triton-repo", "-a", str(artifact), "--repo", str(repo), "--model", name, *extra]
        )
        assert res.exit_code == 0, res.output
    config = (repo / "act_bf16" / "config.pbtxt").read_text()
    assert 'backend: "openvino"' in config and 'key: "HINT_BF16"' in config
    assert sorted(p.name for p in (repo / "act_bf16" / "1").iterdir()) == ["model.bin", "model.xml"]
    assert (repo / "act_bf16_py" / "1" / "model.py").exists()
    res = CliRunner().invoke(app, ["triton-repo", "--check", str(repo)])
    assert res.exit_code == 0, res.output
    # A config that would run a bf16 artifact at f32 (or the reverse) fails the offline check.
    (repo / "act_bf16" / "config.pbtxt").write_text(config.replace('"HINT_BF16"', '"HINT_BF16_OFF"'))
    assert any("HINT_BF16" in p for p in check_model(repo / "act_bf16").problems)
    (repo / "act_bf16" / "config.pbtxt").write_text(config)

    spec = small_loaded.spec
    rng = np.random.default_rng(5)
    stats = image_stats(small_loaded.input_stats, spec.cameras[0].key, 3)
    feed = {
        "state": rng.standard_normal((2, spec.state_dim)).astype(np.float32),
        "image": np.stack([synthetic_frame(rng, spec.cameras[0].shape, stats) for _ in range(2)]),
    }
    with triton_server(repo) as server:
        for name, artifact in (("act_bf16", bf16_xml), ("act_bf16_py", bf16_xml), ("act_int8", int8_onnx)):
            with open_runner(artifact) as runner:
                want = runner.infer(feed)["action_chunk"]
            got = infer(server, "grpc", name, 1, feed)
            np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=name)


def test_calibration_decodes_the_mp4_frames_of_a_dataset_lerobot_wrote(small_loaded, tmp_path):
    """A LeRobotDataset v3.0 with video features, written by LeRobot's own writer (AV1 mp4, both episodes in one
    file): every calibration sample is the frame of its own row (identified by the state written beside it),
    decoded at the row's timestamp plus its episode's offset in the file, not a neighbour's."""
    pytest.importorskip("datasets", reason="LeRobotDataset's writer needs the datasets package (the dev extra)")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from policy_export.quantize.dataset import dataset_samples

    spec = small_loaded.spec
    cam = spec.cameras[0]
    c, h, w = cam.shape
    features = {
        spec.state_key: {"dtype": "float32", "shape": (spec.state_dim,), "names": None},
        cam.key: {"dtype": "video", "shape": (h, w, c), "names": ["height", "width", "channels"]},
        spec.action_key: {"dtype": "float32", "shape": (spec.action_dim,), "names": None},
    }
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    ds = LeRobotDataset.create("local/tiny", fps=10, features=features, root=tmp_path / "ds", use_videos=True)
    rng = np.random.default_rng(0)
    stats = image_stats(small_loaded.input_stats, cam.key, 3)
    written: dict[int, np.ndarray] = {}
    for episode in range(2):
        for i in range(5):
            frame = (synthetic_frame(rng, cam.shape, stats) * 255).astype(np.uint8)
            tag = episode * 10 + i
            written[tag] = frame.astype(np.float32) / 255
            ds.add_frame(
                {
                    spec.state_key: np.full(spec.state_dim, tag, np.float32),
                    cam.key: frame.transpose(1, 2, 0),
                    spec.action_key: np.zeros(spec.action_dim, np.float32),
                    "task": "calibrate",
                }
            )
        ds.save_episode()
    ds.finalize()
    # LeRobot's save_episode (it encodes the AV1 video) leaves the calling thread SCHED_FIFO, measured here; every process
    # this session spawns afterwards would inherit it. Only the test writes video: decoding leaves it alone.
    os.sched_setscheduler(0, policy, param)
    assert list((tmp_path / "ds" / "videos").rglob("*.mp4")), "LeRobot wrote no video"

    feeds, record = dataset_samples(tmp_path / "ds", small_loaded, 10)
    assert os.sched_getscheduler(0) == policy, "decoding a dataset's video changed the thread's scheduling"
    assert record["rows"] == 10 and len(feeds) == 10
    seen = []
    for feed in feeds:
        tag = int(feed["state"][0, 0])
        image = feed[cam.input_name][0]
        assert image.shape == cam.shape and image.dtype == np.float32
        errors = {t: float(np.abs(image - f).mean()) for t, f in written.items()}
        assert min(errors, key=errors.__getitem__) == tag, (tag, errors)
        assert errors[tag] < 0.05  # AV1 at LeRobot's default CRF: ~0.01 mean error per pixel here
        seen.append(tag)
    assert sorted(seen) == sorted(written)


def test_verify_rollout_judges_reduced_precision_by_the_std_contract(small_loaded, int8_onnx):
    """The rollout rows of an int8 artifact (``verify --rollout``) are judged per action dimension against
    --tolerance-std on frame-like observations, as its chunk rows are, not by fp32's 1e-4 (which int8 rounding
    exceeds by design)."""
    from policy_export.rollout import rollout_checks

    checks = rollout_checks(
        small_loaded, [inspect_artifact(int8_onnx)], steps=3, batch_sizes=[1], tolerance_std=SMALL_INT8_TOLERANCE_STD
    )
    assert checks and all(c.status == Status.PASSED for c in checks), [
        (c.check, c.reason, [(r.worst_frac_std, r.stats.max_abs) for r in c.results]) for c in checks
    ]
    for check in checks:
        assert check.tolerance_std == SMALL_INT8_TOLERANCE_STD and check.inputs == "frames"
        assert check.atol_source.startswith("default int8: --tolerance-std")
        (row,) = check.results
        assert len(row.dims) == small_loaded.spec.action_dim and 0 < row.worst_frac_std <= SMALL_INT8_TOLERANCE_STD
        assert row.stats.max_abs > 1e-4  # what the fp32 tolerance would have failed
        row.tolerance_std = 0.5 * row.worst_frac_std
        assert not row.passed  # the per-dimension bound is part of the row's verdict


def test_an_int8_artifact_with_8_bit_weights_warns_on_a_cpu_without_vnni(int8_onnx, monkeypatch, caplog):
    """Quantized where VNNI exists (8-bit weights) and opened where it does not, ONNX Runtime's u8s8 kernels
    saturate: the runner says so in one line when it opens the file; 7-bit weights (what quantize writes
    there) or a CPU with VNNI open silently."""
    import dataclasses
    import logging

    from policy_export.runners.onnxrt import OnnxRuntimeRunner, saturation_warning

    info = inspect_artifact(int8_onnx)
    meta = info.metadata
    full = dataclasses.replace(
        info, metadata=dataclasses.replace(meta, quantization={**meta.quantization, "weight_bits": 8})
    )
    seven = dataclasses.replace(
        info, metadata=dataclasses.replace(meta, quantization={**meta.quantization, "weight_bits": 7})
    )
    monkeypatch.setenv("POLICY_EXPORT_CPU_FLAGS", "avx2 fma")
    assert "re-quantize it here" in (saturation_warning(full) or "")
    assert saturation_warning(seven) is None
    with caplog.at_level(logging.WARNING, logger="policy_export.runners.onnxrt"):
        runner = OnnxRuntimeRunner(full)
        runner.activate()
        runner.deactivate()
    assert [r.message for r in caplog.records if "saturate" in r.message] == [saturation_warning(full)]
    monkeypatch.setenv("POLICY_EXPORT_CPU_FLAGS", "avx2 fma avx512_vnni")
    assert saturation_warning(full) is None
