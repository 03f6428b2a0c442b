"""TEST STAND-IN for Triton's native ONNX Runtime backend. NOT the native backend.

Triton's C++ ``onnxruntime`` backend cannot be installed on our CPU-only test machines (the
nvidia-pytriton wheel ships the Python backend only). So that an UNMODIFIED generated config
(``platform: "onnxruntime_onnx"`` / ``backend: "onnxruntime"``) can still be loaded, batched
and served in tests, ``policy_export.triton.server.prepare_backends`` installs this file as
``<backend-directory>/onnxruntime/model.py``: a Triton *Python-based backend* of the same
name, which runs the version folder's ``model.onnx`` through ONNX Runtime's Python API
(same library, same numbers). Production servers use the real backend; nothing written into
a model repository depends on this file.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from policy_export_ort_model import TritonPythonModel as _OrtModel


class TritonPythonModel(_OrtModel):
    backend_label = "onnxruntime TEST STAND-IN (Python-based backend, not the native one)"
