"""Shared fixtures: real LeRobot ACT checkpoints built locally and exported once per session.

Checkpoints are written with LeRobot's own ``save_pretrained`` (random init, perturbed
frozen batch-norm, plausible stats, a config.json naming the ImageNet backbone weights)
and loaded back through the same code path users hit. Most are small so the suite stays
fast; ``demo_ckpt`` is the full-size default policy.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

# Read by torch's OpenMP pool when it first loads: keep the suite from taking every core of a shared machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")

from policy_export.demo import SMALL_RECIPE as SMALL
from policy_export.demo import CheckpointRecipe, build_checkpoint

MULTICAM = CheckpointRecipe(
    cameras={"top": (3, 64, 80), "wrist": (3, 72, 96)},
    state_dim=10,
    action_dim=7,
    chunk_size=16,
    n_action_steps=16,
    normalization={"VISUAL": "IDENTITY", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"},
    dim_model=128,
    dim_feedforward=256,
    n_encoder_layers=2,
    seed=2,
)
ENSEMBLE = CheckpointRecipe(
    cameras={"front": (3, 64, 64)},
    state_dim=4,
    action_dim=4,
    chunk_size=12,
    n_action_steps=1,
    temporal_ensemble_coeff=0.01,
    dim_model=64,
    dim_feedforward=128,
    n_encoder_layers=1,
    seed=3,
)


def _build(factory: pytest.TempPathFactory, name: str, recipe: CheckpointRecipe | None) -> Path:
    return build_checkpoint(factory.mktemp(name) / "pretrained_model", recipe)


@pytest.fixture(scope="session")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "small", SMALL)


@pytest.fixture(scope="session")
def multicam_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "multicam", MULTICAM)


@pytest.fixture(scope="session")
def ensemble_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "ensemble", ENSEMBLE)


@pytest.fixture(scope="session")
def demo_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "demo", None)


@pytest.fixture(scope="session")
def small_loaded(small_ckpt: Path):
    from policy_export.checkpoint import load_checkpoint

    return load_checkpoint(small_ckpt)


@pytest.fixture(scope="session")
def multicam_loaded(multicam_ckpt: Path):
    from policy_export.checkpoint import load_checkpoint

    return load_checkpoint(multicam_ckpt)


def _export(loaded, path: Path, **kw) -> Path:
    from policy_export.export.onnx import export_onnx

    export_onnx(loaded, path, **kw)
    return path


@pytest.fixture(scope="session")
def small_onnx(small_loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(small_loaded, tmp_path_factory.mktemp("small_onnx") / "small.onnx")


@pytest.fixture(scope="session")
def multicam_onnx(multicam_loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(multicam_loaded, tmp_path_factory.mktemp("multicam_onnx") / "multicam.onnx")


@pytest.fixture(scope="session")
def small_fp16_onnx(small_loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(small_loaded, tmp_path_factory.mktemp("small_fp16_onnx") / "small-fp16.onnx", precision="fp16")


@pytest.fixture(scope="session")
def small_torchscript(small_loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from policy_export.export.torchscript import export_torchscript

    path = tmp_path_factory.mktemp("small_torchscript") / "small.pt"
    export_torchscript(small_loaded, path)
    return path


@pytest.fixture(scope="session")
def small_uint8_onnx(small_loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small policy taking raw camera frames (uint8 [B, H, W, 3]); scaling happens in-graph."""
    return _export(small_loaded, tmp_path_factory.mktemp("small_uint8_onnx") / "small-uint8.onnx", image_format="uint8")


# Diffusion Policy: two tiny checkpoints that between them cover DDPM and DDIM, one and two
# cameras, n_obs_steps 1 and 3, crop and no crop (tiny U-Net, 3 denoising steps, 40-pixel images).
_TINY_UNET = {"down_dims": (16, 32), "diffusion_step_embed_dim": 16, "spatial_softmax_num_keypoints": 8}
DIFF_DDPM = {
    "cameras": {"top": (3, 40, 40)},
    "state_dim": 3,
    "action_dim": 2,
    "n_obs_steps": 1,
    "horizon": 8,
    "n_action_steps": 5,
    "crop_shape": (35, 34),  # odd margin: torchvision rounds half to even
    "config_overrides": {
        **_TINY_UNET,
        "noise_scheduler_type": "DDPM",
        "num_train_timesteps": 20,
        "num_inference_steps": 3,
    },
    "seed": 11,
}
DIFF_DDIM = {
    "cameras": {"top": (3, 40, 48), "wrist": (3, 40, 48)},
    "state_dim": 4,
    "action_dim": 3,
    "n_obs_steps": 3,
    "horizon": 8,
    "n_action_steps": 4,
    "crop_shape": None,
    "normalization": {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MIN_MAX"},
    "config_overrides": {
        **_TINY_UNET,
        "noise_scheduler_type": "DDIM",
        "num_train_timesteps": 30,
        "num_inference_steps": 3,
        "use_separate_rgb_encoder_per_camera": False,
        "prediction_type": "sample",
    },
    "seed": 12,
}


@contextlib.contextmanager
def one_torch_thread():
    """The tiny diffusion models run thousands of small convolutions: on a shared 2-core machine,
    torch's two-thread pool waits on busy cores at every one (measured 6x slower than one thread)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build_diffusion(factory: pytest.TempPathFactory, name: str, recipe: dict) -> Path:
    from policy_export.demo import DiffusionRecipe, build_diffusion_checkpoint

    with one_torch_thread():
        return build_diffusion_checkpoint(factory.mktemp(name) / "pretrained_model", DiffusionRecipe(**recipe))


@pytest.fixture(scope="session")
def ddpm_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_diffusion(tmp_path_factory, "ddpm", DIFF_DDPM)


@pytest.fixture(scope="session")
def ddim_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_diffusion(tmp_path_factory, "ddim", DIFF_DDIM)


@pytest.fixture(scope="session")
def ddpm_loaded(ddpm_ckpt: Path):
    from policy_export.checkpoint import load_checkpoint

    return load_checkpoint(ddpm_ckpt)


@pytest.fixture(scope="session")
def ddim_loaded(ddim_ckpt: Path):
    from policy_export.checkpoint import load_checkpoint

    return load_checkpoint(ddim_ckpt)


@pytest.fixture(scope="session")
def ddpm_onnx(ddpm_loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with one_torch_thread():
        return _export(ddpm_loaded, tmp_path_factory.mktemp("ddpm_onnx") / "ddpm.onnx")


@pytest.fixture(scope="session")
def tiny_smolvla(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny SmolVLA (two cameras, RTC, a local VLM folder) loaded as every command loads it, and
    exported by ``policy-export onnx``'s code, once per session: every SmolVLA test shares them."""
    from policy_export.checkpoint import load_checkpoint
    from policy_export.demo_smolvla import TINY_SMOLVLA, build_smolvla_checkpoint
    from policy_export.export.onnx import export_onnx

    root = build_smolvla_checkpoint(tmp_path_factory.mktemp("smolvla") / "pretrained_model", TINY_SMOLVLA)
    ckpt = load_checkpoint(root)
    onnx_path = tmp_path_factory.mktemp("smolvla_onnx") / "tiny.onnx"
    result = export_onnx(ckpt, onnx_path)
    assert result.exporter == "legacy" and result.quick_check_max_abs <= 1e-4
    policy = ckpt.policy
    shapes = [tuple(policy.config.image_features[k].shape) for k in policy.config.image_features]
    return {
        "ckpt": ckpt,
        "policy": policy,
        "pre": ckpt.preprocessor,
        "post": ckpt.postprocessor,
        "onnx": onnx_path,
        "names": ckpt.spec.input_names,
        "shapes": shapes,
    }


@pytest.fixture(autouse=True)
def _no_test_leaves_this_thread_real_time():
    """A RealtimeClient on a local core makes its caller's thread SCHED_FIFO until ``close()``; a test that
    leaks one leaves the whole session real-time (and every process it spawns inherits it). Fail that test."""
    before = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
    yield
    if before is not None:
        after = os.sched_getscheduler(0)
        assert after == before, f"the test left the main thread's scheduling policy at {after} (was {before})"
