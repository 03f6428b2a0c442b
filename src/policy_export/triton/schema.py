"""Triton's own ModelConfig schema (tritonclient's protobuf module) and the server version we target."""

from __future__ import annotations

from typing import Any

from policy_export.errors import UnavailableError

TRITON_SERVER_VERSION = "2.51"  # the server the generated configs are tested against


def model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError as exc:
        raise UnavailableError(
            f"tritonclient is not installed ({exc}); pip install 'policy-export[triton]' for Triton repositories"
        ) from exc
    return pb
