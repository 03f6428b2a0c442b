"""Robot-side runtime: the host-side action shim and the client for the exported core.

Importable with numpy alone: torch, lerobot, onnxruntime and tritonclient are imported
only by the backend that needs them, when it is created.
"""

from policy_export.runtime.backends import Backend, LocalBackend
from policy_export.runtime.client import PolicyClient
from policy_export.runtime.observation import ObservationAdapter
from policy_export.runtime.shim import ActionQueue, ShimSettings, TemporalEnsembler

__all__ = [
    "ActionQueue",
    "Backend",
    "LocalBackend",
    "ObservationAdapter",
    "PolicyClient",
    "ShimSettings",
    "TemporalEnsembler",
]
