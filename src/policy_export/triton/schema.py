"""Triton's own ModelConfig schema (tritonclient's protobuf module), the server version we target, and
parsing a ``config.pbtxt`` with it (refusing the fields the target server does not know)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy_export.errors import BadInputError, UnavailableError

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

TRITON_SERVER_VERSION = "2.51"  # the server the generated configs are tested against


def model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError as exc:
        raise UnavailableError(
            f"tritonclient is not installed ({exc}); pip install 'policy-export[triton]' for Triton repositories"
        ) from exc
    return pb


# Fields tritonclient 2.67's ModelConfig has and the 2.51 server's does not.
FIELDS_NEWER_THAN_SERVER = frozenset(
    {"inference.ModelConfig.model_metrics", "inference.ModelEnsembling.max_inflight_requests"}
)


def parse_config(path: Path) -> ModelConfig:
    """Parse config.pbtxt with Triton's schema; one-line error naming the file and position."""
    from google.protobuf import text_format

    pb = model_config_pb2()
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror})") from exc
    cfg = pb.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise BadInputError(f"{path}: not a valid Triton ModelConfig: {exc}") from exc
    newer = sorted(_set_fields(cfg) & FIELDS_NEWER_THAN_SERVER)
    if newer:
        raise BadInputError(
            f"{path}: field {newer[0].split('.', 1)[1]} is not known to Triton {TRITON_SERVER_VERSION} "
            "(the server version these repositories target); remove it"
        )
    return cfg


def _set_fields(msg: Any) -> set[str]:
    """Full names of every field set anywhere in ``msg`` (for the server-version check)."""
    out: set[str] = set()
    for fd, value in msg.ListFields():
        out.add(fd.full_name)
        if fd.message_type is None:
            continue
        if fd.message_type.GetOptions().map_entry:
            is_msg = fd.message_type.fields_by_name["value"].message_type is not None
            values = list(value.values()) if is_msg else []
        elif fd.label == fd.LABEL_REPEATED:
            values = list(value)
        else:
            values = [value]
        for v in values:
            out |= _set_fields(v)
    return out
