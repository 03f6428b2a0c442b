"""SmolVLA's stateless core, exported to ONNX, against LeRobot's own ``predict_action_chunk``.

A tiny SmolVLA (SmolVLM's architecture at toy size, two cameras of different shapes, cross-
and self-attention expert layers) is built offline, its VLM folder included. Its core is exported
once (one ONNX ``Loop`` for the flow steps) and run by ONNX Runtime on fresh random inputs,
against LeRobot's preprocessor-normalized batch -> ``predict_action_chunk(batch, noise=...)``
-> postprocessor, without and with real-time chunking (``prev_chunk_left_over`` /
``inference_delay``, RTC enabled as LeRobot's rollout enables it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from policy_export.demo_smolvla import TINY_SMOLVLA  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tiny_smolvla: dict[str, Any]) -> dict[str, Any]:
    """The session's tiny SmolVLA checkpoint and its ONNX export (tests/conftest.py)."""
    return tiny_smolvla


TASKS = ["pick up the red cube", "push the t shaped block onto the target", "open the drawer", "wipe"]


def _inputs(policy: Any, pre: Any, shapes: list, batch: int, rng: np.random.Generator) -> dict[str, Any]:
    """Fresh random robot inputs; tokens from LeRobot's own tokenizer step (padded to the longest task)."""
    cfg = policy.config
    state = torch.from_numpy(rng.normal(0, 1, (batch, cfg.robot_state_feature.shape[0])).astype(np.float32))
    images = [torch.from_numpy(rng.uniform(0, 1, (batch, *s)).astype(np.float32)) for s in shapes]
    obs = {"observation.state": state, **dict(zip(cfg.image_features, images, strict=True))}
    obs["task"] = [TASKS[i % len(TASKS)] for i in range(batch)]
    batch_in = pre(obs)
    chunk, action_dim = cfg.chunk_size, cfg.action_feature.shape[0]
    noise = torch.from_numpy(rng.normal(0, 1, (batch, chunk, cfg.max_action_dim)).astype(np.float32))
    prev = torch.from_numpy(rng.normal(0, 1, (batch, chunk, action_dim)).astype(np.float32))
    zeros = torch.zeros(batch, dtype=torch.long)
    # The host pads to the core's token axis (tokenizer_max_length); LeRobot's batch keeps its own padding.
    pad = cfg.tokenizer_max_length - batch_in["observation.language.tokens"].shape[1]
    tokens = torch.nn.functional.pad(batch_in["observation.language.tokens"], (0, pad), value=2)
    mask = torch.nn.functional.pad(batch_in["observation.language.attention_mask"], (0, pad), value=False)
    return {
        "batch": batch_in,
        "noise": noise,
        "prev": prev,
        "core": [state, *images, tokens, mask, noise, prev, zeros, zeros.clone()],
    }


def _ort(tiny: dict[str, Any], core_inputs: list) -> np.ndarray:
    import onnxruntime as ort

    sess = tiny.setdefault("sess", ort.InferenceSession(str(tiny["onnx"]), providers=["CPUExecutionProvider"]))
    return sess.run(None, {n: x.numpy() for n, x in zip(tiny["names"], core_inputs, strict=True)})[0]


def _lerobot(tiny: dict[str, Any], batch: dict, noise: Any, **rtc: Any) -> np.ndarray:
    with torch.no_grad():
        chunk = tiny["policy"].predict_action_chunk(dict(batch), noise=noise, **rtc)
        return tiny["post"](chunk).numpy()


def _normalized(tiny: dict[str, Any], prev: Any) -> Any:
    """LeRobot guides with model-space leftovers: the preprocessor's own action normalization."""
    from lerobot.processor import NormalizerProcessorStep

    step = next(s for s in tiny["pre"].steps if isinstance(s, NormalizerProcessorStep))
    stats = step.stats["action"]
    return (prev - torch.as_tensor(stats["mean"])) / (torch.as_tensor(stats["std"]) + step.eps)


def test_the_flow_steps_are_one_onnx_loop_reading_a_prefix_computed_once(tiny: dict[str, Any]) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny["onnx"]))
    loops = [n for n in model.graph.node if n.op_type == "Loop"]
    assert len(loops) == 1, "the Euler steps must be one Loop, not unrolled"
    body = next(a.g for a in loops[0].attribute if a.name == "body")
    body_ops = {n.op_type for n in body.node}
    assert "Conv" not in body_ops, "the vision tower (the prefix) must not run inside the loop"
    assert "Conv" in {n.op_type for n in model.graph.node}
    # A counted loop: its trip count is a constant, the number of flow steps.
    trip = next(
        numpy_helper.to_array(a.t)
        for n in model.graph.node
        if n.op_type == "Constant" and loops[0].input[0] in n.output
        for a in n.attribute
        if a.name == "value"
    )
    assert int(trip) == TINY_SMOLVLA.num_steps


@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_equals_lerobot_without_rtc(tiny: dict[str, Any], batch: int) -> None:
    data = _inputs(tiny["policy"], tiny["pre"], tiny["shapes"], batch, np.random.default_rng(100 + batch))
    want = _lerobot(tiny, data["batch"], data["noise"])
    got = _ort(tiny, data["core"])
    assert got.shape == want.shape == (batch, TINY_SMOLVLA.chunk_size, TINY_SMOLVLA.action_dim)
    assert np.abs(got - want).max() <= TOL, np.abs(got - want).max()


@pytest.mark.parametrize(("batch", "length", "delay"), [(1, 10, 0), (4, 3, 5)])
def test_onnx_equals_lerobot_with_rtc(tiny: dict[str, Any], batch: int, length: int, delay: int) -> None:
    data = _inputs(tiny["policy"], tiny["pre"], tiny["shapes"], batch, np.random.default_rng(200 + length))
    prev = data["prev"]
    want = _lerobot(
        tiny,
        data["batch"],
        data["noise"],
        prev_chunk_left_over=_normalized(tiny, prev[:, :length]),
        inference_delay=delay,
    )
    core_in = list(data["core"])
    core_in[-2] = torch.full((batch,), length, dtype=torch.long)
    core_in[-1] = torch.full((batch,), delay, dtype=torch.long)
    got = _ort(tiny, core_in)
    assert np.abs(got - want).max() <= TOL, np.abs(got - want).max()
    # The guidance really acted: without it the first rows are far away.
    unguided = _ort(tiny, data["core"])
    assert np.abs(unguided - want).max() > 100 * TOL


def test_rtc_is_per_robot(tiny: dict[str, Any]) -> None:
    """Four robots with different leftovers and delays in one batch = LeRobot run for each alone."""
    data = _inputs(tiny["policy"], tiny["pre"], tiny["shapes"], 4, np.random.default_rng(7))
    lengths, delays = [0, 10, 4, 6], [3, 0, 1, 9]
    core_in = list(data["core"])
    core_in[-2] = torch.tensor(lengths)
    core_in[-1] = torch.tensor(delays)
    got = _ort(tiny, core_in)
    for b, (length, delay) in enumerate(zip(lengths, delays, strict=True)):
        one = {k: v[b : b + 1] if hasattr(v, "shape") else v for k, v in data["batch"].items()}
        rtc = (
            {}
            if length == 0
            else {
                "prev_chunk_left_over": _normalized(tiny, data["prev"][b : b + 1, :length]),
                "inference_delay": delay,
            }
        )
        want = _lerobot(tiny, one, data["noise"][b : b + 1], **rtc)
        assert np.abs(got[b : b + 1] - want).max() <= TOL, (b, np.abs(got[b : b + 1] - want).max())


def test_rtc_guidance_closed_form_is_lerobots_autograd() -> None:
    """LeRobot's RTCProcessor.denoise_step (autograd through x_t - time * v_t) = the core's closed form."""
    from lerobot.configs import RTCAttentionSchedule
    from lerobot.policies.rtc.configuration_rtc import RTCConfig
    from lerobot.policies.rtc.modeling_rtc import RTCProcessor

    from policy_export.families.smolvla_tables import RTCSettings, flow_schedule, guidance_weights, prefix_weight_table

    rng = np.random.default_rng(5)
    chunk, dim, steps = 12, 6, 5
    times, _ = flow_schedule(steps)
    for schedule in RTCAttentionSchedule:
        cfg = RTCConfig(enabled=True, execution_horizon=8, max_guidance_weight=7.0, prefix_attention_schedule=schedule)
        settings = RTCSettings.of(type("C", (), {"rtc_config": cfg})())
        table = prefix_weight_table(settings, chunk)
        guidance = guidance_weights(steps, cfg.max_guidance_weight)
        processor = RTCProcessor(cfg)
        for i, time in enumerate(times):
            x_t = torch.from_numpy(rng.normal(0, 1, (2, chunk, dim)).astype(np.float32))
            v_t = torch.from_numpy(rng.normal(0, 1, (2, chunk, dim)).astype(np.float32))
            length, delay = int(rng.integers(1, chunk + 1)), int(rng.integers(0, chunk + 1))
            prev = torch.from_numpy(rng.normal(0, 1, (2, length, dim)).astype(np.float32))
            want = processor.denoise_step(x_t, prev, delay, time, lambda x, v=v_t: v, execution_horizon=None)
            padded = torch.zeros(2, chunk, dim)
            padded[:, :length] = prev
            weights = table[min(length, cfg.execution_horizon), min(delay, chunk)][None, :, None]
            time_f32 = torch.tensor(times[i], dtype=torch.float32)
            got = v_t - torch.tensor(guidance[i]) * ((padded - (x_t - time_f32 * v_t)) * weights)
            assert torch.equal(got, want), (schedule, i, (got - want).abs().max())


def test_unsupported_settings_are_refused(tmp_path: Path) -> None:
    from policy_export_wrappers.smolvla import expert_layout

    with pytest.raises(ValueError, match="attention_mode"):
        expert_layout(4, 4, "prefix_attn", 2)
    with pytest.raises(ValueError, match="must divide"):
        expert_layout(6, 4, "cross_attn", 2)
    with pytest.raises(ValueError, match="self-attends but has no expert layer"):
        expert_layout(8, 2, "cross_attn", 2)
    assert [e for e, _ in expert_layout(4, 2, "cross_attn", 2)] == [0, None, 1, None]


def test_verify_passes_and_the_reference_guides_per_robot(tiny: dict[str, Any]) -> None:
    """``verify`` (the family's LeRobot reference) passes at batch 1 and 4; and that reference, given RTC
    inputs that differ per robot, equals the artifact (it runs LeRobot per robot with RTC enabled)."""
    from policy_export.families import family_for
    from policy_export.verify import verify_artifacts

    ckpt = tiny["ckpt"]
    report = verify_artifacts(ckpt, [tiny["onnx"]], batch_sizes=[1, 4], samples=1)
    assert report.exit_code == 0
    assert max(r.stats.max_abs for c in report.checks for r in c.results) <= TOL
    data = _inputs(tiny["policy"], tiny["pre"], tiny["shapes"], 3, np.random.default_rng(11))
    feed = {n: x.numpy() for n, x in zip(tiny["names"], data["core"], strict=True)}
    feed["rtc_prev_len"] = np.array([0, 8, 3])
    feed["rtc_delay"] = np.array([4, 2, 0])
    want = family_for("smolvla").reference_chunk(ckpt, feed, "float32")
    got = _ort(tiny, [torch.from_numpy(feed[n]) for n in tiny["names"]])
    assert np.abs(got - want).max() <= TOL
    unguided = _ort(tiny, data["core"])
    assert np.abs(unguided[1:] - want[1:]).max() > 100 * TOL and np.abs(unguided[0] - want[0]).max() <= TOL


def test_quantize_takes_a_smolvla_and_verify_judges_it_per_action_dim(tiny: dict[str, Any], tmp_path: Path) -> None:
    """``policy-export quantize`` on a VLA core: its calibration and held-out feeds carry every declared
    input (task tokens and mask, RTC inputs), and ``verify`` judges the int8 file against LeRobot eager
    per action dimension as a fraction of the action std (issue 22's gate)."""
    from policy_export.quantize.run import quantize
    from policy_export.verify import verify_artifacts

    ckpt = tiny["ckpt"]
    out = tmp_path / "tiny-int8.onnx"
    result = quantize(ckpt, tiny["onnx"], out, precision="int8", runtime="onnxruntime", samples=4)
    assert result.passed and len(result.dims) == ckpt.spec.action_dim
    sidecar = out.with_name(out.name + ".tokenizer.json")  # the robot's host tokenizes the task with it
    assert sidecar.read_bytes() == tiny["onnx"].with_name(tiny["onnx"].name + ".tokenizer.json").read_bytes()
    report = verify_artifacts(ckpt, [out], batch_sizes=[1], samples=1, tolerance_std=0.02)
    (check,) = report.checks
    (row,) = check.results
    assert report.exit_code == 0 and 0 < row.worst_frac_std <= 0.02 and len(row.dims) == ckpt.spec.action_dim


def test_metadata_declares_language_rtc_and_the_tokenizer_file(tiny: dict[str, Any]) -> None:
    import hashlib

    from policy_export.artifacts import inspect_artifact

    info = inspect_artifact(tiny["onnx"])
    spec = info.metadata.spec
    roles = [str(t.role) for t in spec.signature.inputs]
    assert roles == [
        "state",
        "camera",
        "camera",
        "lang_tokens",
        "lang_mask",
        "noise",
        "rtc_prev_chunk",
        "rtc_prev_len",
        "rtc_delay",
    ]
    assert spec.host.rtc == {
        "execution_horizon": 6,
        "max_guidance_weight": 5.0,
        "prefix_attention_schedule": "LINEAR",
        "source": "checkpoint",
    }
    assert spec.host.tokenizer is not None and spec.host.tokenizer["max_length"] == TINY_SMOLVLA.tokenizer_max_length
    sidecar = Path(str(tiny["onnx"]) + ".tokenizer.json")
    assert hashlib.sha256(sidecar.read_bytes()).hexdigest() == spec.host.tokenizer["sha256"]
    assert spec.family["num_steps"] == TINY_SMOLVLA.num_steps and spec.family["image_size"] == [32, 32]


def _edited_checkpoint(src: Path, dst: Path, **changes: object) -> Path:
    import json
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_bad_vlm_folders_and_unsupported_settings_are_one_line_exit_2(tiny: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from policy_export.cli.app import app

    src = tiny["ckpt"].path
    vlm = Path(tiny["policy"].config.vlm_model_name)
    no_tokenizer = tmp_path / "vlm-no-tokenizer"
    shutil.copytree(vlm, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    no_processor = tmp_path / "vlm-no-processor"
    shutil.copytree(vlm, no_processor)
    (no_processor / "processor_config.json").write_text("{ not json")
    cases = {
        "hub": ({"vlm_model_name": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"}, "never downloads"),
        "tokenizer": ({"vlm_model_name": str(no_tokenizer)}, "tokenizer"),
        "processor": ({"vlm_model_name": str(no_processor)}, "processor"),
        "attention": ({"attention_mode": "prefix_attn"}, "attention_mode"),
        "cameras": ({"empty_cameras": 1}, "empty_cameras"),
        "layout": ({"num_expert_layers": 1}, "expert layout"),
    }
    for name, (changes, words) in cases.items():
        ckpt = _edited_checkpoint(src, tmp_path / name, **changes)
        res = CliRunner().invoke(app, ["inspect", "--checkpoint", str(ckpt)])
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        assert res.exit_code == 2, (name, res.output)
        assert words in " ".join(res.output.split()), (name, res.output)
        if name in ("hub", "tokenizer", "processor"):
            assert "vlm_model_name" in res.output
        assert len(lines) <= 2, (name, res.output)  # one message (rich may wrap it)
