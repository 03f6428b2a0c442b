"""TEST STAND-IN for Triton's native OpenVINO backend. NOT the native backend.

Triton's C++ ``openvino`` backend is not in the nvidia-pytriton wheel our CPU test machines run.
So that an UNMODIFIED generated config (``backend: "openvino"``, ``model.xml`` + ``model.bin``,
the backend's own ``HINT_BF16`` / ``PERFORMANCE_HINT`` / ``NUM_STREAMS`` parameters) can still be
loaded, batched and served in tests, ``policy_export.triton.install.prepare_backends`` installs this
file as ``<backend-directory>/openvino/model.py``: a Triton *Python-based backend* of the same name,
running the version folder's IR through OpenVINO's Python API (same library, same numbers).
Production servers use the real backend; nothing written into a model repository depends on this file.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from policy_export_ov_model import TritonPythonModel as _OvModel


class TritonPythonModel(_OvModel):
    backend_label = "openvino TEST STAND-IN (Python-based backend, not the native one)"
