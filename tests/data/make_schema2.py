"""Writes tests/data/schema2_*.onnx: tiny graphs carrying metadata exactly as policy-export wrote it
before the family seam (metadata schema 2, main at d1cd460). Kept as files so that the old-schema
tests read what that code wrote, not a conversion of today's records.

Run with that code (not today's):  git worktree add /tmp/old d1cd460 && PYTHONPATH=/tmp/old/src python THIS
The graphs are not policies: ``action_chunk = mean(state over its non-batch axes) * ones[chunk, A]``,
other inputs unused, so a test knows every action the file must give.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from policy_export.export.onnx import _embed_metadata
from policy_export.spec import METADATA_SCHEMA, ArtifactMetadata, CameraSpec, NoiseInput, PolicySpec

assert METADATA_SCHEMA == 2, "run with the code that wrote schema 2"
HERE = Path(__file__).parent


def write(name: str, spec: PolicySpec) -> None:
    meta = ArtifactMetadata(spec=spec, artifact_kind="onnx", exporter="legacy", opset=17)
    shapes, dtypes = meta.input_shapes(), meta.input_dtypes()
    elem = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8}
    inputs = [helper.make_tensor_value_info(n, elem[dtypes[n]], list(shapes[n])) for n in spec.input_names]
    axes = list(range(1, len(shapes["state"])))
    ones = numpy_helper.from_array(np.ones((1, spec.chunk_size, spec.action_dim), np.float32), "ones")
    nodes = [
        helper.make_node("ReduceMean", ["state"], ["m"], axes=axes, keepdims=0),
        helper.make_node("Reshape", ["m", "shape"], ["m3"]),
        helper.make_node("Mul", ["m3", "ones"], ["action_chunk"]),
    ]
    inits = [
        ones,
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
    ]
    out = helper.make_tensor_value_info("action_chunk", TensorProto.FLOAT, ["batch", spec.chunk_size, spec.action_dim])
    graph = helper.make_graph(nodes, name, inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _embed_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(HERE / f"{name}.onnx"))


common = dict(
    state_key="observation.state",
    state_dim=3,
    action_key="action",
    action_dim=2,
    normalization={"observation.state": "MEAN_STD", "observation.images.top": "MEAN_STD", "action": "MEAN_STD"},
    norm_hash="0123456789abcdef",
)
cams = (CameraSpec("observation.images.top", "image", (3, 4, 5)),)
write(
    "schema2_act_ensemble",
    PolicySpec(
        policy_type="act",
        cameras=cams,
        chunk_size=4,
        n_action_steps=1,
        family={"temporal_ensemble_coeff": 0.01},
        **common,
    ),
)
write(
    "schema2_diffusion",
    PolicySpec(
        policy_type="diffusion",
        cameras=cams,
        chunk_size=3,
        n_action_steps=3,
        n_obs_steps=2,
        noise_inputs=(NoiseInput("noise", (6, 2)), NoiseInput("step_noise", (2, 6, 2))),
        family={
            "horizon": 6,
            "noise_scheduler_type": "DDPM",
            "num_inference_steps": 3,
            "num_train_timesteps": 100,
            "prediction_type": "epsilon",
            "crop_shape": None,
        },
        **common,
    ),
)
print("written", file=sys.stderr)
