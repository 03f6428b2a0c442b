"""The stateless core against LeRobot's own processors and predict_action_chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_export.checkpoint import load_checkpoint
from policy_export.core import build_core
from policy_export.families import eager_chunk
from policy_export.inputs import checkpoint_inputs, random_inputs


def _core_out(core, spec, feed):
    with torch.inference_mode():
        return core(*(torch.from_numpy(feed[n]) for n in spec.input_names)).numpy()


@pytest.mark.parametrize("fixture", ["small_loaded", "multicam_loaded"])
@pytest.mark.parametrize("batch", [1, 3])
def test_core_matches_lerobot_eager(request, fixture, batch):
    ckpt = request.getfixturevalue(fixture)
    core = build_core(ckpt)
    feed = checkpoint_inputs(ckpt, batch, np.random.default_rng(batch))
    want = eager_chunk(ckpt, feed)
    got = _core_out(core, ckpt.spec, feed)
    assert got.shape == (batch, ckpt.spec.chunk_size, ckpt.spec.action_dim)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert np.abs(want).max() > 0.05  # actions are in robot units, not a degenerate all-zero output


def test_core_uint8_frames_match_lerobot_conversion(small_loaded):
    ckpt = small_loaded
    core = build_core(ckpt, image_format="uint8")
    feed = random_inputs(ckpt.spec, 2, np.random.default_rng(7), image_format="uint8")
    assert feed["image"].dtype == np.uint8 and feed["image"].shape[-1] == 3
    np.testing.assert_allclose(_core_out(core, ckpt.spec, feed), eager_chunk(ckpt, feed, "uint8"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["MEAN_STD", "MIN_MAX", "IDENTITY", "QUANTILES", "QUANTILE10"])
@pytest.mark.parametrize("inverse", [False, True])
def test_feature_normalizer_matches_lerobot_step(mode, inverse):
    """Each mode, both directions, against LeRobot's own (un)normalizer step, bitwise."""
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.processor.normalize_processor import NormalizerProcessorStep, UnnormalizerProcessorStep

    from policy_export_wrappers.act import FeatureNormalizer

    rng = np.random.default_rng(0)
    dim = 6
    lo = rng.normal(0, 1, dim).astype(np.float32)
    hi = lo + rng.uniform(0.1, 2, dim).astype(np.float32)
    hi[2] = lo[2]  # a degenerate range: LeRobot substitutes eps, so must we
    stats = {
        "mean": rng.normal(0, 1, dim).astype(np.float32),
        "std": rng.uniform(0.1, 2, dim).astype(np.float32),
        "min": lo,
        "max": hi,
        "q01": lo,
        "q99": hi,
        "q10": lo,
        "q90": hi,
    }
    key, ftype = ("action", FeatureType.ACTION) if inverse else ("observation.state", FeatureType.STATE)
    feats = {key: PolicyFeature(type=ftype, shape=(dim,))}
    cls = UnnormalizerProcessorStep if inverse else NormalizerProcessorStep
    step = cls(features=feats, norm_map={ftype: NormalizationMode(mode)}, stats={key: stats})
    x = torch.from_numpy(rng.normal(0, 3, (4, dim)).astype(np.float32))
    want = step._apply_transform(x, key, ftype, inverse=inverse)
    ours = FeatureNormalizer(mode, {k: torch.from_numpy(v) for k, v in stats.items()}, inverse=inverse)
    assert torch.equal(ours(x), want)


def test_core_has_no_batch_dependent_constants(small_loaded):
    """The same core object serves batch 1 then batch 5 (the zero-latent trap)."""
    core = build_core(small_loaded)
    spec = small_loaded.spec
    for b in (1, 5, 2):
        feed = random_inputs(spec, b, np.random.default_rng(b))
        assert _core_out(core, spec, feed).shape[0] == b


def test_checkpoint_loading_never_downloads(small_ckpt, monkeypatch):
    """config.json names ImageNet weights like a trained checkpoint; loading must stay offline."""
    import json
    import socket

    assert json.loads((small_ckpt / "config.json").read_text())["pretrained_backbone_weights"]

    def no_network(*a, **k):
        raise AssertionError("checkpoint loading tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    ckpt = load_checkpoint(small_ckpt)
    assert ckpt.spec.policy_type == "act"
