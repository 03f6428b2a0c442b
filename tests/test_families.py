"""The policy-family seam: registry, unsupported types, and old (schema 1) artifacts still loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from policy_export.artifacts import inspect_artifact
from policy_export.errors import BadInputError
from policy_export.families import family_for, supported_policy_types
from policy_export.spec import METADATA_KEY, ArtifactMetadata

SCHEMA1 = Path(__file__).parent / "data" / "metadata_schema1.json"


def test_unsupported_family_is_one_line_naming_the_supported_ones():
    with pytest.raises(BadInputError) as err:
        family_for("pi0", where="cfg.json")
    msg = str(err.value)
    assert "\n" not in msg and "'pi0'" in msg and all(t in msg for t in supported_policy_types())


def test_schema1_record_written_by_the_act_only_code_reads():
    """tests/data/metadata_schema1.json is what the ACT-only code (schema 1) wrote for an ensembling,
    two-camera, uint8 ONNX artifact; it must read into today's spec unchanged in meaning."""
    meta = ArtifactMetadata.from_json(SCHEMA1.read_text())
    spec = meta.spec
    assert spec.host.ensemble_coeff == 0.01 and spec.n_action_steps == 1 and spec.chunk_size == 8
    assert spec.input_names == ["state", "image_top", "image_wrist"] and spec.noise_inputs == ()
    assert spec.family == {} and spec.host.history is None
    assert meta.input_shapes()["image_wrist"] == ("batch", 48, 64, 3)
    assert ArtifactMetadata.from_json(meta.to_json()) == meta  # and re-written in today's schema


def _as_schema1(meta: ArtifactMetadata) -> str:
    """Today's metadata in the ACT-only layout (checked against the recorded one above)."""
    d = json.loads(meta.to_json())
    spec = d["spec"]
    spec["temporal_ensemble_coeff"] = spec.pop("host")["ensemble_coeff"]
    del spec["signature"], spec["family"]
    d["schema"] = 1
    old = json.loads(SCHEMA1.read_text())
    assert set(d) == set(old) and set(spec) == set(old["spec"])
    return json.dumps(d, sort_keys=True)


def test_schema1_onnx_artifact_runs_in_the_client(small_onnx, tmp_path):
    import onnx

    from policy_export.inputs import random_inputs
    from policy_export.runtime import PolicyClient

    old = tmp_path / "old.onnx"
    shutil.copy(small_onnx, old)
    model = onnx.load(str(old))
    meta = inspect_artifact(small_onnx).metadata
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = _as_schema1(meta)
    onnx.save(model, str(old))
    assert json.loads(dict((p.key, p.value) for p in onnx.load(str(old)).metadata_props)[METADATA_KEY])["schema"] == 1
    info = inspect_artifact(old)
    assert info.metadata.spec == meta.spec and [t.name for t in info.inputs] == meta.spec.input_names

    feed = random_inputs(meta.spec, 2, np.random.default_rng(0))
    obs = {meta.spec.state_key: feed["state"], **{c.key: feed[c.input_name] for c in meta.spec.cameras}}
    with PolicyClient.from_artifact(old) as a, PolicyClient.from_artifact(small_onnx) as b:
        for _ in range(3):
            np.testing.assert_array_equal(a.select_action(obs), b.select_action(obs))


def test_newer_schema_is_refused_with_one_line(tmp_path):
    d = json.loads(SCHEMA1.read_text())
    d["schema"] = 99
    with pytest.raises(ValueError, match="newer"):
        ArtifactMetadata.from_json(json.dumps(d))


SCHEMA2 = {
    "act": Path(__file__).parent / "data" / "schema2_act_ensemble.onnx",
    "diffusion": Path(__file__).parent / "data" / "schema2_diffusion.onnx",
}


def test_schema2_files_written_by_the_old_code_read_into_schema3():
    """tests/data/schema2_*.onnx were written by the code before the family seam (make_schema2.py):
    their metadata must read into the same meaning: ACT's coefficient becomes the host's ensembling,
    Diffusion's n_obs_steps the host's history and its noise inputs NOISE / STEP_NOISE roles."""
    from policy_export.spec import Role

    act = inspect_artifact(SCHEMA2["act"]).metadata
    assert act.spec.host.ensemble_coeff == 0.01 and act.spec.family == {} and act.spec.host.history is None
    assert [t.role for t in act.spec.signature.inputs] == [Role.STATE, Role.CAMERA]
    diff = inspect_artifact(SCHEMA2["diffusion"]).metadata
    assert diff.spec.host.history == 2 and diff.spec.host.ensemble_coeff is None
    assert [(t.name, t.role) for t in diff.spec.signature.inputs] == [
        ("state", Role.STATE),
        ("image", Role.CAMERA),
        ("noise", Role.NOISE),
        ("step_noise", Role.STEP_NOISE),
    ]
    assert diff.input_shapes() == {
        "state": ("batch", 2, 3),
        "image": ("batch", 2, 3, 4, 5),
        "noise": ("batch", 6, 2),
        "step_noise": ("batch", 2, 6, 2),
    }
    assert diff.spec.family["noise_scheduler_type"] == "DDPM"
    assert ArtifactMetadata.from_json(diff.to_json()) == diff  # and re-written in today's schema


@pytest.mark.parametrize("family", ["act", "diffusion"])
def test_schema2_files_run_in_the_client(family):
    """The old files run: the host side comes from the upgraded declaration (ensembling over every
    chunk for ACT, a two-step history plus drawn noise for Diffusion). Their graph's action is the
    mean of the state fed (over the history too), so the expected actions are known exactly."""
    from policy_export.runtime import PolicyClient

    rng = np.random.default_rng(0)
    with PolicyClient.from_artifact(SCHEMA2[family], seed=0) as client:
        states = []
        for _ in range(4):
            state = rng.standard_normal(3).astype(np.float32)
            obs = {"observation.state": state, "observation.images.top": rng.random((3, 4, 5), dtype=np.float32)}
            action = client.select_action(obs)
            states.append(state)
            assert action.shape == (1, 2)
            if family == "diffusion" and len(states) == 1:
                # first chunk: the history is two copies of the first state
                np.testing.assert_allclose(action[0], [state.mean()] * 2, rtol=1e-6)
            if family == "act":
                # ensembling constant chunks of the step's mean: a weighted mean of the means seen so far
                w = np.exp(-0.01 * np.arange(len(states)))
                want = sum(wi * s.mean() for wi, s in zip(w, states, strict=True)) / w.sum()
                np.testing.assert_allclose(action[0], [want] * 2, rtol=1e-5)
