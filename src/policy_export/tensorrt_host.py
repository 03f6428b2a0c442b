"""What a host needs to build or run TensorRT plans, and whether a plan fits this host.

Asked by the exporter (before a build), the runner (before loading a plan) and the export
pipeline (to report a format as unavailable), so it lives in neither: nothing here imports
tensorrt or polygraphy at module level, and the GPU is asked of the CUDA driver directly.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from policy_export.errors import UnavailableError, first_line


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here (one line), or None when a GPU and the module are present."""
    missing = []
    if cuda_device0() is None:
        missing.append("no CUDA GPU is visible")
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the `tensorrt` Python module is not installed")
    else:
        try:
            import tensorrt  # noqa: F401
        except (ImportError, OSError) as exc:
            missing.append(f"`import tensorrt` fails ({first_line(exc)})")
    if not missing:
        return None
    return (
        f"TensorRT is not available here: {' and '.join(missing)}; build and run plans on an NVIDIA GPU host "
        "with `pip install tensorrt` (see README, `nox -s gpu`)"
    )


#: CUdevice_attribute values of the CUDA driver API (cuda.h).
_CU_COMPUTE_CAPABILITY_MAJOR, _CU_COMPUTE_CAPABILITY_MINOR = 75, 76


def cuda_device0() -> dict[str, str] | None:
    """Name and compute capability of CUDA device 0 (after CUDA_VISIBLE_DEVICES), or None.

    Asked of the CUDA driver (``libcuda``) through ctypes rather than through torch, so a
    robot host that runs plans with only numpy + tensorrt installed can check them too.
    """
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count, dev = ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    if cuda.cuDeviceGet(ctypes.byref(dev), 0) != 0:
        return None
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetName(name, len(name), dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), _CU_COMPUTE_CAPABILITY_MAJOR, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CU_COMPUTE_CAPABILITY_MINOR, dev)
    return {"gpu_name": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}"}


def host_info() -> dict[str, str]:
    """TensorRT version, GPU name and compute capability of this host (GPU 0 of CUDA_VISIBLE_DEVICES)."""
    import tensorrt as trt

    gpu = cuda_device0()
    if gpu is None:
        raise UnavailableError("no CUDA GPU is visible; TensorRT plans build and run on an NVIDIA GPU host")
    return {"tensorrt_version": trt.__version__, **gpu}


def plan_incompatibility(recorded: dict[str, Any], host: dict[str, str]) -> str | None:
    """What differs between the host a plan was built on and this one (None if it may run here)."""
    labels = {"tensorrt_version": "TensorRT", "gpu_name": "GPU", "compute_capability": "compute capability"}
    diffs = [
        f"{label} {recorded.get(key)!s} (built) vs {host.get(key)!s} (here)"
        for key, label in labels.items()
        if str(recorded.get(key)) != str(host.get(key))
    ]
    return "; ".join(diffs) or None


def disable_polygraphy_autoinstall() -> None:
    import polygraphy.config

    polygraphy.config.AUTOINSTALL_DEPS = False
