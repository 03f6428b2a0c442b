"""Offline validation of Triton model repositories: catch a broken config before a server does.

Two layers, because each catches what the other cannot:

1. Triton's own schema: ``config.pbtxt`` is parsed with tritonclient's ``ModelConfig``
   (``model_config_pb2``), which rejects unknown fields, misspelled enums and syntax errors.
   The installed tritonclient (2.67, see pyproject) knows two fields the 2.51 server we test
   against does not (``schema.FIELDS_NEWER_THAN_SERVER``); they are rejected too, so a config that
   passes here parses on a 2.51 server. A test compares this set against the real 2.51 schema.
2. Semantic checks the schema cannot express, mirroring what the server rejects at load
   time plus what only we know: batching needs ``max_batch_size`` > 0, preferred batch sizes
   <= ``max_batch_size``, warmup inputs exactly the model's inputs with the same types and
   dims, every version folder holds the file its backend loads, and each version's artifact
   has the names / data types / dims the config declares (read from the artifact itself);
   the per-version checks live in :mod:`policy_export.triton.version_check`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy_export.errors import BadInputError
from policy_export.triton.backends import BACKENDS, ServingBackend, backend_from_config
from policy_export.triton.schema import model_config_pb2, parse_config
from policy_export.triton.signature import Signature, WireTensor
from policy_export.triton.version_check import _check_version

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

CONFIG = "config.pbtxt"
#: Triton parses version folder names as int64; a larger number crashed tritonserver 2.51 at start-up.
MAX_VERSION = 2**63 - 1
_NAMED_INDEX = re.compile(r"^(.+)__(\d+)$")


@dataclass
class ModelReport:
    """What ``--check`` found for one model folder."""

    name: str
    path: Path
    backend: str = ""
    versions: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def config_signature(cfg: ModelConfig) -> Signature:
    pb = model_config_pb2()

    def wire(t: Any) -> WireTensor:  # a generated protobuf ModelInput/ModelOutput (untyped)
        m = _NAMED_INDEX.match(t.name)
        reshape = tuple(t.reshape.shape) if t.HasField("reshape") else None
        return WireTensor(t.name, m.group(1) if m else t.name, pb.DataType.Name(t.data_type), tuple(t.dims), reshape)

    return Signature(inputs=[wire(t) for t in cfg.input], outputs=[wire(t) for t in cfg.output])


def version_dirs(model_dir: Path) -> dict[int, Path]:
    return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def _check_batching(cfg: ModelConfig, problems: list[str]) -> None:
    mbs = cfg.max_batch_size
    if mbs < 0:
        problems.append(f"max_batch_size {mbs} is negative")
    if cfg.HasField("dynamic_batching"):
        if mbs <= 0:
            problems.append("dynamic_batching needs max_batch_size > 0 (the server refuses to load it)")
        for p in cfg.dynamic_batching.preferred_batch_size:
            if p < 1 or (mbs > 0 and p > mbs):
                problems.append(
                    f"dynamic_batching.preferred_batch_size {p} is outside 1..max_batch_size {mbs}; lower it or raise max_batch_size"
                )
    elif mbs <= 0:
        problems.append("max_batch_size is 0: policy-export artifacts are batched, so Triton could not batch requests")


def _check_io(cfg: ModelConfig, problems: list[str]) -> None:
    pb = model_config_pb2()
    if not cfg.input or not cfg.output:
        problems.append("the config declares no inputs or no outputs")
    for what, tensors in (("input", cfg.input), ("output", cfg.output)):
        names = [t.name for t in tensors]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{what} {dup} is declared twice")
        for t in tensors:
            if not t.name:
                problems.append(f"an {what} has no name")
            if t.data_type == pb.TYPE_INVALID:
                problems.append(f"{what} {t.name} has no data_type")
            if not t.dims or any(d == 0 or d < -1 for d in t.dims):
                problems.append(f"{what} {t.name} has invalid dims {list(t.dims)}")


def _check_named_index(cfg: ModelConfig, problems: list[str]) -> None:
    """pytorch_libtorch: outputs must be <name>__<index>; we use the same for inputs (see config.py)."""
    for what, tensors in (("input", cfg.input), ("output", cfg.output)):
        indices = []
        for t in tensors:
            m = _NAMED_INDEX.match(t.name)
            if not m:
                problems.append(
                    f"{what} {t.name}: pytorch_libtorch needs <name>__<index> names (e.g. {t.name}__0) to map tensors"
                )
                return
            indices.append(int(m.group(2)))
        if sorted(indices) != list(range(len(indices))):
            problems.append(f"{what} indices {indices} must be 0..{len(indices) - 1}, one per positional argument")


def _check_warmup(cfg: ModelConfig, problems: list[str]) -> None:
    pb = model_config_pb2()
    inputs = {t.name: t for t in cfg.input}
    for w in cfg.model_warmup:
        label = f"model_warmup {w.name or '?'}"
        if cfg.max_batch_size > 0 and not 1 <= w.batch_size <= cfg.max_batch_size:
            problems.append(f"{label}: batch_size {w.batch_size} is outside 1..max_batch_size {cfg.max_batch_size}")
        if set(w.inputs) != set(inputs):
            problems.append(f"{label}: inputs {sorted(w.inputs)} must be exactly the model inputs {sorted(inputs)}")
        for key, inp in w.inputs.items():
            t = inputs.get(key)
            if t is None:
                continue
            if inp.data_type != t.data_type:
                problems.append(
                    f"{label}: input {key} is {pb.DataType.Name(inp.data_type)}, the model input is {pb.DataType.Name(t.data_type)}"
                )
            if list(inp.dims) != list(t.dims):
                problems.append(
                    f"{label}: input {key} dims {list(inp.dims)} differ from the model input's {list(t.dims)}"
                )
            if not inp.WhichOneof("input_data_type"):
                problems.append(f"{label}: input {key} has no data (zero_data, random_data or input_data_file)")


def _check_instances(cfg: ModelConfig, spec: ServingBackend, problems: list[str]) -> None:
    pb = model_config_pb2()
    for g in cfg.instance_group:
        if g.count < 0:
            problems.append(f"instance_group count {g.count} is negative")
        if spec.key == "tensorrt" and g.kind == pb.ModelInstanceGroup.KIND_CPU:
            problems.append("instance_group KIND_CPU: a TensorRT plan only runs on a GPU")
    accs = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    for acc in accs:
        if acc.name == "tensorrt":
            if spec.artifact_kind != "onnx":
                problems.append("the tensorrt gpu_execution_accelerator applies to ONNX models only")
            mode = acc.parameters.get("precision_mode", "FP32")
            if mode not in ("FP16", "FP32", "INT8"):
                problems.append(
                    f"gpu_execution_accelerator tensorrt precision_mode {mode!r} must be FP16, FP32 or INT8"
                )


def _check_version_policy(cfg: ModelConfig, versions: dict[int, Path], problems: list[str]) -> None:
    if cfg.version_policy.WhichOneof("policy_choice") == "specific":
        missing = [v for v in cfg.version_policy.specific.versions if v not in versions]
        if missing:
            problems.append(
                f"version_policy specific lists versions {missing} that have no folder (Triton logs an error for each)"
            )


def check_model(model_dir: Path, expected_name: str | None = None) -> ModelReport:
    """All problems with one model folder (empty ``problems`` = valid)."""
    name = expected_name or model_dir.name
    report = ModelReport(name=name, path=model_dir)
    cfg_path = model_dir / CONFIG
    if not cfg_path.exists():
        report.problems.append(f"{CONFIG} is missing")
        return report
    try:
        cfg = parse_config(cfg_path)
    except BadInputError as exc:
        report.problems.append(str(exc).replace(f"{cfg_path}: ", ""))
        return report
    p = report.problems
    if cfg.name and cfg.name != name:
        p.append(f'name "{cfg.name}" differs from the folder name "{name}" (Triton refuses that)')
    kind = cfg.parameters["artifact_kind"].string_value if "artifact_kind" in cfg.parameters else ""
    spec = backend_from_config(cfg.platform, cfg.backend, kind)
    if spec is None:
        known = ", ".join(sorted({s.platform or s.backend for s in BACKENDS.values()}))
        p.append(f"platform {cfg.platform!r} / backend {cfg.backend!r} is not one policy-export writes ({known})")
        return report
    report.backend = spec.platform or spec.backend
    _check_batching(cfg, p)
    _check_io(cfg, p)
    if spec.named_index:
        _check_named_index(cfg, p)
    _check_warmup(cfg, p)
    _check_instances(cfg, spec, p)
    versions = version_dirs(model_dir)
    report.versions = sorted(versions)
    if not versions:
        p.append("no version folder (e.g. 1/) holds a model")
    _check_version_policy(cfg, versions, p)
    sig = config_signature(cfg)
    for v, vdir in sorted(versions.items()):
        if v < 1:
            p.append(f"version folder {vdir.name}: versions start at 1")
            continue
        if v > MAX_VERSION:
            p.append(
                f"version folder {vdir.name}: beyond {MAX_VERSION}, the largest version Triton parses (int64; "
                "tritonserver crashes at start-up on it): renumber it"
            )
            continue
        _check_version(cfg, spec, v, vdir, sig, p)
    return report


def check_repository(path: Path) -> list[ModelReport]:
    """Check a repository (folder of model folders) or a single model folder."""
    if not path.is_dir():
        raise BadInputError(f"{path}: not a folder; give a model repository or a model folder")
    if (path / CONFIG).exists():
        return [check_model(path)]
    reports = []
    for child in sorted(path.iterdir()):
        if not child.is_dir():
            continue
        if child.name.startswith(".") and child.name.endswith((".partial", ".old")):
            reports.append(
                ModelReport(
                    name=child.name,
                    path=child,
                    problems=["left over from an interrupted write; Triton would try to load it as a model: delete it"],
                )
            )
            continue
        reports.append(check_model(child))
    if not reports:
        raise BadInputError(f"{path}: no model folders (NAME/{CONFIG}) here")
    return reports
