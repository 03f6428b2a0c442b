"""Robot-side runtime: the host-side action shim and the client for the exported core.

Importable with numpy alone: torch, lerobot, onnxruntime and tritonclient are imported
only by the backend that needs them, when it is created.
"""

from policy_export.runtime.backends import Backend, CoreHandle, LocalBackend, LocalCore, ModelChangedError
from policy_export.runtime.client import PolicyClient
from policy_export.runtime.host import Host, host_for
from policy_export.runtime.observation import ObservationAdapter
from policy_export.runtime.realtime import (
    Fallback,
    InlineWorker,
    ManualClock,
    Merge,
    RealtimeClient,
    RealtimeDeadError,
    RealtimeSettings,
    State,
    ThreadWorker,
    Tick,
)
from policy_export.runtime.session import Session
from policy_export.runtime.shim import ActionQueue, ShimSettings, TemporalEnsembler

__all__ = [
    "ActionQueue",
    "Backend",
    "CoreHandle",
    "Fallback",
    "Host",
    "InlineWorker",
    "LocalBackend",
    "LocalCore",
    "ManualClock",
    "Merge",
    "ModelChangedError",
    "ObservationAdapter",
    "PolicyClient",
    "RealtimeClient",
    "RealtimeDeadError",
    "RealtimeSettings",
    "Session",
    "ShimSettings",
    "State",
    "TemporalEnsembler",
    "ThreadWorker",
    "Tick",
    "host_for",
]
