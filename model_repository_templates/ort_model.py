"""Triton Python-backend model that serves an exported policy ONNX file with ONNX Runtime.

Written by ``policy-export triton-repo --backend python`` as ``<repo>/<name>/<version>/model.py``
next to ``model.onnx``, for sites that run Triton without the native ONNX Runtime backend.

- Batched: Triton's dynamic batcher hands ``execute`` every queued request at once; their
  inputs are concatenated on the batch axis and run as ONE ONNX Runtime call, then the
  output is split back per request. The model's batch axis is symbolic, so any total up to
  ``max_batch_size`` works.
- Stateless: no action queue or ensembling state lives here (that is the robot-side shim's
  job), so any instance may serve any request and requests from many robots can share a batch.

Tensor names on the wire are the ONNX graph's own names (``state``, ``image`` or
``image_<camera>``, ``action_chunk``), exactly as in config.pbtxt. Needs numpy and
onnxruntime (or onnxruntime-gpu) in the server's Python environment.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

#: The config parameter with ONNX Runtime's intra-op thread count, written by ``triton-repo
#: --intra-op-threads``. This file runs inside the server and cannot import policy-export: the key
#: is ``policy_export.triton_contract.ModelParam.INTRA_OP_THREAD_COUNT`` (a test checks they agree).
INTRA_OP_THREAD_COUNT = "intra_op_thread_count"


def _accelerators(config: dict[str, Any]) -> list[dict[str, Any]]:
    opt = config.get("optimization", {}).get("execution_accelerators", {})
    return opt.get("gpu_execution_accelerator", []) or []


class TritonPythonModel:
    backend_label = "python backend + onnxruntime"

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.model_name = config.get("name", args.get("model_name", "?"))
        version_dir = os.path.join(args["model_repository"], str(args["model_version"]))
        # For the Python backend default_model_filename is model.py itself; the ONNX file sits beside it.
        filename = config.get("default_model_filename") or ""
        path = os.path.join(version_dir, filename if filename.endswith(".onnx") else "model.onnx")
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"{self.model_name}: {path} does not exist")
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        threads = int(params.get(INTRA_OP_THREAD_COUNT, "0") or 0)
        if threads > 0:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1

        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise pb_utils.TritonModelException(
                    f"{self.model_name}: instance kind GPU but onnxruntime has no CUDAExecutionProvider "
                    f"(have {available}); install onnxruntime-gpu in the server environment or use KIND_CPU"
                )
            device = {"device_id": int(args.get("model_instance_device_id", 0))}
            providers = [("CUDAExecutionProvider", device)]
            for acc in _accelerators(config):
                if acc.get("name") == "tensorrt":
                    fp16 = acc.get("parameters", {}).get("precision_mode", "FP32").upper() == "FP16"
                    providers.insert(0, ("TensorrtExecutionProvider", {**device, "trt_fp16_enable": fp16}))
        self.session = ort.InferenceSession(path, sess_options=so, providers=providers)

        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        if set(self.input_names) != graph_inputs or not set(self.output_names) <= graph_outputs:
            raise pb_utils.TritonModelException(
                f"{self.model_name}: config inputs {self.input_names} / outputs {self.output_names} do not match "
                f"{os.path.basename(path)} (inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)})"
            )
        pb_utils.Logger.log_info(
            f"{self.model_name} v{args['model_version']}: {self.backend_label}, {path}, "
            f"providers {self.session.get_providers()}"
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
            outputs = self.session.run(self.output_names, batch)
        except Exception as exc:  # one bad batch must not take the model down
            error = pb_utils.TritonError(f"{self.model_name}: onnxruntime failed: {type(exc).__name__}: {exc}")
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
        self.session = None
