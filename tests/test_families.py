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
    assert spec.temporal_ensemble_coeff == 0.01 and spec.n_action_steps == 1 and spec.chunk_size == 8
    assert spec.input_names == ["state", "image_top", "image_wrist"] and spec.noise_inputs == ()
    assert meta.input_shapes()["image_wrist"] == ("batch", 48, 64, 3)
    assert ArtifactMetadata.from_json(meta.to_json()) == meta  # and re-written in today's schema


def _as_schema1(meta: ArtifactMetadata) -> str:
    """Today's metadata in the ACT-only layout (checked against the recorded one above)."""
    d = json.loads(meta.to_json())
    spec = d["spec"]
    spec["temporal_ensemble_coeff"] = spec.pop("family")["temporal_ensemble_coeff"]
    del spec["n_obs_steps"], spec["noise_inputs"]
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
