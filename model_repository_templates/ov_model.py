"""Triton Python-backend model that serves a policy OpenVINO IR (``policy-export quantize``) on the CPU.

Written by ``policy-export triton-repo --backend python`` as ``<repo>/<name>/<version>/model.py`` next to
``model.xml`` + ``model.bin``; also the test stand-in for Triton's native ``openvino`` backend (see
``openvino_stand_in.py``), so it reads the SAME config parameters the native backend reads:

- ``HINT_BF16`` = ``YES``: OpenVINO's bf16 inference precision (what a bf16 artifact is). Without it this
  model pins f32 (the native backend then uses OpenVINO's default, which is bf16 on AMX CPUs: see README).
- ``PERFORMANCE_HINT`` (default LATENCY), ``NUM_STREAMS`` (default 1), ``INFERENCE_NUM_THREADS``.

Batched and stateless like ``ort_model.py``: queued requests are concatenated on the batch axis, run as
one inference and split back. Needs numpy and openvino in the server's Python environment; never torch.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

#: policy_export.triton_contract.ModelParam.INTRA_OP_THREAD_COUNT (this file cannot import policy-export).
INTRA_OP_THREAD_COUNT = "intra_op_thread_count"


def compile_properties(params: dict[str, str]) -> dict[str, Any]:
    """The CPU plugin properties the native backend derives from the same parameters (plus f32 pinned)."""
    props: dict[str, Any] = {
        "PERFORMANCE_HINT": params.get("PERFORMANCE_HINT", "LATENCY").upper(),
        "NUM_STREAMS": params.get("NUM_STREAMS", "1"),
        "INFERENCE_PRECISION_HINT": "bf16" if params.get("HINT_BF16", "").upper() == "YES" else "f32",
    }
    threads = int(params.get("INFERENCE_NUM_THREADS") or params.get(INTRA_OP_THREAD_COUNT) or 0)
    if threads > 0:
        props["INFERENCE_NUM_THREADS"] = threads
    return props


class TritonPythonModel:
    backend_label = "python backend + openvino"

    def initialize(self, args: dict[str, str]) -> None:
        import openvino as ov

        config = json.loads(args["model_config"])
        self.model_name = config.get("name", args.get("model_name", "?"))
        version_dir = os.path.join(args["model_repository"], str(args["model_version"]))
        path = os.path.join(version_dir, "model.xml")
        if not os.path.exists(path) or not os.path.exists(os.path.join(version_dir, "model.bin")):
            raise pb_utils.TritonModelException(f"{self.model_name}: {path} or its model.bin does not exist")
        if args.get("model_instance_kind") == "GPU":
            raise pb_utils.TritonModelException(f"{self.model_name}: this model runs on the CPU; use KIND_CPU")
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.compiled = ov.Core().compile_model(path, "CPU", compile_properties(params))
        self.request = self.compiled.create_infer_request()
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        graph_inputs = {n for p in self.compiled.inputs for n in p.get_names()}
        graph_outputs = {n for p in self.compiled.outputs for n in p.get_names()}
        if not set(self.input_names) <= graph_inputs or not set(self.output_names) <= graph_outputs:
            raise pb_utils.TritonModelException(
                f"{self.model_name}: config inputs {self.input_names} / outputs {self.output_names} do not match "
                f"model.xml (inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)})"
            )
        pb_utils.Logger.log_info(
            f"{self.model_name} v{args['model_version']}: {self.backend_label}, {path}, {compile_properties(params)}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        per_request = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names} for r in requests
        ]
        sizes = [feed[self.input_names[0]].shape[0] for feed in per_request]
        if len(requests) == 1:
            batch = per_request[0]
        else:
            batch = {n: np.concatenate([feed[n] for feed in per_request], axis=0) for n in self.input_names}
        try:
            result = self.request.infer(batch)
            outputs = [np.asarray(result[self.compiled.output(n)]) for n in self.output_names]
        except Exception as exc:  # one bad batch must not take the model down
            error = pb_utils.TritonError(f"{self.model_name}: openvino failed: {type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + size]))
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.request = None
        self.compiled = None
