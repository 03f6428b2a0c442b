"""The policy-family seam: registry, unsupported types, and old (schema 1) artifacts still loading."""

from __future__ import annotations

import json
import re
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
        family_for("pi0_fast", where="cfg.json")
    msg = str(err.value)
    assert "\n" not in msg and "'pi0_fast'" in msg and all(t in msg for t in supported_policy_types())


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
    d.pop("quantization", None)  # newer than schema 1: the record of a reduced-precision artifact
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


def _spec_with(extra_inputs, dims=None, **host):
    from policy_export.spec import (
        CameraSpec,
        HostDecl,
        PolicySpec,
        Signature,
        action_chunk_output,
        observation_inputs,
    )

    cams = (CameraSpec("observation.images.top", "image", (3, 4, 5)),)
    sig = Signature(
        (*observation_inputs(3, cams), *extra_inputs),
        (action_chunk_output(),),
        {"state_dim": 3, "action_dim": 2, "chunk": 4, **(dims or {})},
    )
    return PolicySpec("custom", "observation.state", 3, "action", 2, cams, 4, 2, {}, "h", sig, HostDecl(**host))


def test_host_side_is_composed_from_roles():
    """The runtime's host reads roles only: noise without history (a combination no built-in family
    has) is drawn per chunk from the seeded generator, RTC inputs get "no guidance"."""
    from policy_export.runtime.host import Host
    from policy_export.spec import BATCH, ArtifactMetadata, Role, TensorDecl

    spec = _spec_with(
        [
            TensorDecl("noise", Role.NOISE, (BATCH, "chunk", "action_dim")),
            TensorDecl("rtc_prev_len", Role.RTC_PREV_LEN, (BATCH,), dtype="int64"),
        ]
    )
    meta = ArtifactMetadata.from_json(ArtifactMetadata(spec, "test").to_json())  # through the checks
    host = Host(meta, seed=3)

    class Prep:
        batch_size = 2

        def feed(self, rows=None):
            return {"state": np.zeros((2, 3), np.float32)}

    feed = host.feed(Prep())(None)
    assert feed["noise"].shape == (2, 4, 2) and feed["rtc_prev_len"].tolist() == [0, 0]
    np.testing.assert_array_equal(feed["noise"], np.random.default_rng(3).standard_normal((2, 4, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["signature"]["inputs"].append(dict(d["signature"]["inputs"][0])), "declared twice"),
        (lambda d: d["signature"]["outputs"][0].update(shape=["batch", "chunk", 5]), "outputs must be action_chunk"),
        (lambda d: d["signature"]["inputs"][2].update(shape=["batch", "horizon"]), "neither a dim of"),
        (lambda d: d["signature"]["inputs"][2].update(dtype="complex64"), "dtype 'complex64' is not one of"),
        (lambda d: d["signature"]["inputs"][2].update(shape=["batch", 1 << 15, 1 << 15]), "elements per robot"),
        (lambda d: d["signature"]["dims"].update(chunk=5), "dims.chunk = 5 but spec says 4"),
        (lambda d: d["cameras"][0].update(shape=[3, 4, 6]), "camera inputs"),
        (lambda d: d["host"].update(history=2), "dims.n_obs = None but spec.host.history is 2"),
        (lambda d: d.update(policy_type="a\nb"), "spec.policy_type is 'a\\nb', not a one-line name"),
    ],
)
def test_every_record_field_is_typed_and_bounded(edit, message):
    from policy_export.spec import BATCH, Role, TensorDecl, check_spec_record

    record = _spec_with([TensorDecl("noise", Role.NOISE, (BATCH, "chunk", "action_dim"))]).to_dict()
    check_spec_record(record)  # as written: fine
    edit(record)
    with pytest.raises(ValueError, match=re.escape(message)):
        check_spec_record(record)
