"""Build a Triton ``config.pbtxt`` from exported artifacts' real signatures.

The config is assembled as Triton's own ``ModelConfig`` protobuf message (tritonclient's
``model_config_pb2``), not by pasting strings, so a typo'd field or enum cannot be written;
names, data types and dims come from the artifact file itself (``inspect_artifact``), never
from the checkpoint or the user. The text is wrapped in ``config.pbtxt.tmpl`` (package data
from ``model_repository_templates/``), whose header comment tells a reader what a client must
send.

Naming on the wire (what a client sends/reads, recorded in ``parameters`` as
``input_names``/``output_names``):

- ONNX (``onnxruntime_onnx``, and ``--backend python``) and TensorRT plans: the graph's own
  names, ``state``, ``image`` (or ``image_<camera>``), ``action_chunk``.
- TorchScript (``pytorch_libtorch``): ``<name>__<index>`` (``state__0``, ``image__1``...,
  ``action_chunk__0``). Triton's libtorch backend maps outputs *only* through that
  convention, and inputs either through forward-argument names or the same convention; a
  traced ``forward(state, *images)`` has no usable argument names for the images, so the
  index convention is the one that always works. The index is the positional argument.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from policy_export import __version__
from policy_export.artifacts import ArtifactInfo, TensorSig
from policy_export.dtypes import triton_config_type
from policy_export.errors import BadInputError, UnavailableError

TRITON_SERVER_VERSION = "2.51"  # the server the generated configs are tested against

# Ranges of the ModelConfig fields options land in (model_config.proto): beyond them protobuf raises
# mid-build, or the server misreads the value.
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class BackendSpec:
    """How Triton runs one artifact kind, and the file name that backend looks for."""

    key: str
    backend: str
    platform: str | None
    filename: str
    artifact_kind: str
    named_index: bool = False  # pytorch_libtorch's <name>__<index> convention


BACKENDS = {
    "onnxruntime": BackendSpec("onnxruntime", "onnxruntime", "onnxruntime_onnx", "model.onnx", "onnx"),
    "python": BackendSpec("python", "python", None, "model.onnx", "onnx"),
    "tensorrt": BackendSpec("tensorrt", "tensorrt", "tensorrt_plan", "model.plan", "tensorrt"),
    "pytorch": BackendSpec("pytorch", "pytorch", "pytorch_libtorch", "model.pt", "torchscript", named_index=True),
}
AUTO_BACKEND = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "torchscript": "pytorch"}


def backend_for(artifact_kind: str, choice: str = "auto") -> BackendSpec:
    if choice == "auto":
        return BACKENDS[AUTO_BACKEND[artifact_kind]]
    if choice not in BACKENDS:
        raise BadInputError(f"--backend must be auto or one of {', '.join(BACKENDS)}, not {choice!r}")
    spec = BACKENDS[choice]
    if spec.artifact_kind != artifact_kind:
        raise BadInputError(
            f"--backend {choice} serves {spec.artifact_kind} files, but the artifact is {artifact_kind}; "
            f"drop --backend or export {spec.artifact_kind}"
        )
    return spec


def backend_from_config(platform: str, backend: str) -> BackendSpec | None:
    """The backend a config names (platform wins; both must agree when both are set)."""
    for spec in BACKENDS.values():
        if platform and platform == spec.platform:
            return spec if backend in ("", spec.backend) else None
    if not platform:
        return BACKENDS.get(backend)
    return None


@dataclass(frozen=True)
class TritonOptions:
    """Model-wide serving settings (the CLI's options); see ``policy-export triton-repo --help``."""

    backend: str = "auto"
    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 500
    instance_count: int = 1
    kind: str | None = None  # "cpu" | "gpu"; None: gpu for TensorRT plans, cpu otherwise
    warmup: bool = True
    version_policy: str = "latest:1"
    ort_trt: str | None = None  # "fp16" | "fp32": ONNX Runtime's TensorRT accelerator

    def resolved_kind(self, spec: BackendSpec) -> str:
        return self.kind or ("gpu" if spec.key == "tensorrt" else "cpu")

    @classmethod
    def from_config(cls, cfg: Any) -> TritonOptions:
        """The options an existing ``ModelConfig`` was written with (the inverse of :func:`build_config`).

        A new version regenerates the model's one config; starting from these, not from the
        defaults, is what keeps e.g. ``version_policy: all`` from silently dropping the
        versions already served.
        """
        choice = cfg.version_policy.WhichOneof("policy_choice")
        if choice == "all":
            policy = "all"
        elif choice == "specific":
            policy = "specific:" + ",".join(map(str, cfg.version_policy.specific.versions))
        elif choice == "latest":
            policy = f"latest:{cfg.version_policy.latest.num_versions}"
        else:
            policy = "latest:1"  # Triton's default when the config names none
        group = cfg.instance_group[0] if cfg.instance_group else None
        group_enum = model_config_pb2().ModelInstanceGroup
        kinds = {group_enum.KIND_GPU: "gpu", group_enum.KIND_CPU: "cpu"}
        accs = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        trt = [a.parameters.get("precision_mode", "FP32").lower() for a in accs if a.name == "tensorrt"]
        return cls(
            backend="python" if cfg.backend == "python" else "auto",
            max_batch_size=cfg.max_batch_size,
            preferred_batch_sizes=tuple(cfg.dynamic_batching.preferred_batch_size),
            max_queue_delay_us=cfg.dynamic_batching.max_queue_delay_microseconds,
            instance_count=group.count if group is not None and group.count > 0 else 1,
            kind=kinds.get(group.kind) if group is not None else None,
            warmup=bool(cfg.model_warmup),
            version_policy=policy,
            ort_trt=trt[0] if trt else None,
        )


@dataclass(frozen=True)
class WireTensor:
    """One tensor as Triton sees it: wire name, Triton data type, dims without the batch axis."""

    name: str
    policy_name: str
    data_type: str
    dims: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} {self.data_type} {list(self.dims)}"


@dataclass
class Signature:
    inputs: list[WireTensor] = field(default_factory=list)
    outputs: list[WireTensor] = field(default_factory=list)


def parse_version_policy(text: str) -> tuple[str, list[int]]:
    """``latest:N`` | ``all`` | ``specific:1,2`` -> (kind, numbers)."""
    text = text.strip()
    if text == "all":
        return "all", []
    m = re.fullmatch(r"latest:(\d+)", text)
    if m and 1 <= int(m.group(1)) <= UINT32_MAX:  # latest.num_versions is a uint32
        return "latest", [int(m.group(1))]
    m = re.fullmatch(r"specific:(\d+(?:,\d+)*)", text)
    if m:
        versions = sorted({int(v) for v in m.group(1).split(",")})
        if all(1 <= v <= INT64_MAX for v in versions):  # specific.versions are int64, as Triton parses folders
            return "specific", versions
    raise BadInputError(
        f"--version-policy {text!r}: use latest:N (1 <= N <= {UINT32_MAX}), all, or specific:1,2 (versions 1..{INT64_MAX})"
    )


def _wire(sig: TensorSig, index: int, spec: BackendSpec, path: Path) -> WireTensor:
    if not sig.shape or isinstance(sig.shape[0], int):
        raise BadInputError(
            f"{path}: {sig.name} has a fixed batch axis {list(sig.shape)}; Triton batching needs a dynamic batch "
            "axis: re-export it with policy-export (dynamic batch)"
        )
    dims = sig.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise BadInputError(f"{path}: {sig.name} has symbolic dims {list(sig.shape)} beyond the batch axis")
    data_type = triton_config_type(sig.dtype)
    if data_type is None:
        raise BadInputError(f"{path}: {sig.name} has data type {sig.dtype}, which this tool cannot map to Triton")
    name = f"{sig.name}__{index}" if spec.named_index else sig.name
    return WireTensor(name, sig.name, data_type, tuple(int(d) for d in dims))


def wire_signature(info: ArtifactInfo, spec: BackendSpec) -> Signature:
    """The artifact's inputs/outputs as a Triton config must declare them."""
    return Signature(
        inputs=[_wire(s, i, spec, info.path) for i, s in enumerate(info.inputs)],
        outputs=[_wire(s, i, spec, info.path) for i, s in enumerate(info.outputs)],
    )


def signature_differences(old: Signature, new: Signature) -> list[str]:
    """Human-readable differences between two signatures (empty when they are the same)."""
    diffs: list[str] = []
    for what, a, b in (("input", old.inputs, new.inputs), ("output", old.outputs, new.outputs)):
        a_names, b_names = [t.name for t in a], [t.name for t in b]
        if a_names != b_names:
            diffs.append(f"{what} names {a_names} in the config vs {b_names} in the new artifact")
            continue
        for ta, tb in zip(a, b, strict=True):
            if ta.data_type != tb.data_type:
                diffs.append(
                    f"{what} {ta.name}: data type {ta.data_type} in the config vs {tb.data_type} in the new artifact"
                )
            if ta.dims != tb.dims:
                diffs.append(
                    f"{what} {ta.name}: dims {list(ta.dims)} in the config vs {list(tb.dims)} in the new artifact"
                )
    return diffs


def model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError as exc:
        raise UnavailableError(
            f"tritonclient is not installed ({exc}); pip install 'policy-export[triton]' for Triton repositories"
        ) from exc
    return pb


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _coeff(value: float | None) -> str:
    """ "none" when ensembling is off: an empty string would vanish from the JSON form of the config."""
    return "none" if value is None else repr(value)


def _policy_parameters(sig: Signature, versions: dict[int, ArtifactInfo], spec: BackendSpec) -> dict[str, str]:
    latest = versions[max(versions)].metadata
    s = latest.spec
    params = {
        "policy_export_version": __version__,
        "policy_type": s.policy_type,
        "artifact_kind": latest.artifact_kind,
        "image_format": latest.image_format,
        "chunk_size": str(s.chunk_size),
        "state_dim": str(s.state_dim),
        "action_dim": str(s.action_dim),
        "cameras": json.dumps([{"key": c.key, "input_name": c.input_name, "shape": list(c.shape)} for c in s.cameras]),
        "policy_input_names": ",".join(t.policy_name for t in sig.inputs),
        "policy_output_names": ",".join(t.policy_name for t in sig.outputs),
        "input_names": ",".join(t.name for t in sig.inputs),
        "output_names": ",".join(t.name for t in sig.outputs),
        "naming_convention": "name__index" if spec.named_index else "graph_names",
        "versions": ",".join(str(v) for v in sorted(versions)),
        # The latest version's values, for clients that do not pin a version; per-version below.
        "n_action_steps": str(s.n_action_steps),
        "temporal_ensemble_coeff": _coeff(s.temporal_ensemble_coeff),
        "normalization_hash": s.norm_hash,
    }
    for v, info in sorted(versions.items()):
        m = info.metadata
        params.update(
            {
                f"version.{v}.n_action_steps": str(m.spec.n_action_steps),
                f"version.{v}.temporal_ensemble_coeff": _coeff(m.spec.temporal_ensemble_coeff),
                f"version.{v}.normalization_hash": m.spec.norm_hash,
                f"version.{v}.precision": m.precision,
                f"version.{v}.sha256": file_sha256(info.path),
                f"version.{v}.metadata": m.to_json(),
            }
        )
    return params


def plan_profile(plan: Path) -> dict[str, int] | None:
    """The batch optimization profile recorded in a TensorRT plan's sidecar (None if absent)."""
    from policy_export.artifacts import read_tensorrt_sidecar

    try:
        profile = read_tensorrt_sidecar(plan).get("tensorrt", {}).get("profile")
    except BadInputError:
        return None
    if isinstance(profile, dict) and all(isinstance(profile.get(k), int) for k in ("min", "max")):
        return {k: int(v) for k, v in profile.items() if isinstance(v, int)}
    return None


def profile_problems(plan: Path, max_batch_size: int) -> list[str]:
    """Why Triton would refuse or fail this plan at ``max_batch_size`` (its profile bounds the batch)."""
    profile = plan_profile(plan)
    if profile is None:
        return []
    problems = []
    if max_batch_size > profile["max"]:
        problems.append(
            f"max_batch_size {max_batch_size} exceeds the plan's optimization profile max {profile['max']}: "
            "rebuild the plan with a larger --max-batch or lower --max-batch-size"
        )
    if profile["min"] > 1:
        problems.append(
            f"the plan's optimization profile min batch is {profile['min']}: batch-1 requests would fail; rebuild with --min-batch 1"
        )
    return problems


def _check_options(options: TritonOptions, spec: BackendSpec) -> None:
    mbs = options.max_batch_size
    if mbs < 1:
        raise BadInputError(f"--max-batch-size {mbs}: must be >= 1 (the policy core is batched on axis 0)")
    if mbs > INT32_MAX:
        raise BadInputError(f"--max-batch-size {mbs}: must be <= {INT32_MAX} (max_batch_size is an int32)")
    bad = [p for p in options.preferred_batch_sizes if p < 1 or p > mbs]
    if bad:
        raise BadInputError(f"--preferred-batch-sizes {bad}: each must be between 1 and --max-batch-size {mbs}")
    if not 0 <= options.max_queue_delay_us <= UINT64_MAX:
        raise BadInputError(
            f"--max-queue-delay-us {options.max_queue_delay_us}: must be 0..{UINT64_MAX} "
            "(max_queue_delay_microseconds is a uint64)"
        )
    if not 1 <= options.instance_count <= INT32_MAX:
        raise BadInputError(
            f"--instance-count {options.instance_count}: must be 1..{INT32_MAX} (instance_group count is an int32)"
        )
    kind = options.resolved_kind(spec)
    if kind not in ("cpu", "gpu"):
        raise BadInputError(f"--kind must be cpu or gpu, not {kind!r}")
    if spec.key == "tensorrt" and kind != "gpu":
        raise BadInputError("--kind cpu: a TensorRT plan only runs on a GPU; use --kind gpu")
    if options.ort_trt is not None:
        if options.ort_trt not in ("fp16", "fp32"):
            raise BadInputError(f"--ort-trt must be fp16 or fp32, not {options.ort_trt!r}")
        if spec.artifact_kind != "onnx":
            raise BadInputError("--ort-trt applies to ONNX models only (ONNX Runtime's TensorRT accelerator)")
        if kind != "gpu":
            raise BadInputError("--ort-trt needs --kind gpu (ONNX Runtime's TensorRT accelerator runs on the GPU)")
    parse_version_policy(options.version_policy)


def build_config(
    name: str, versions: dict[int, ArtifactInfo], spec: BackendSpec, options: TritonOptions
) -> tuple[Any, Signature]:
    """The ModelConfig message for model ``name`` serving ``versions`` (all the same signature)."""
    pb = model_config_pb2()
    _check_options(options, spec)
    if spec.key == "tensorrt":
        for info in versions.values():
            problems = profile_problems(info.path, options.max_batch_size)
            if problems:
                raise BadInputError(f"{info.path}: {problems[0]}")
    sig = wire_signature(versions[max(versions)], spec)
    cfg = pb.ModelConfig()
    cfg.name = name
    if spec.platform:
        cfg.platform = spec.platform
    cfg.backend = spec.backend
    cfg.max_batch_size = options.max_batch_size

    policy, numbers = parse_version_policy(options.version_policy)
    if policy == "all":
        cfg.version_policy.all.SetInParent()
    elif policy == "latest":
        cfg.version_policy.latest.num_versions = numbers[0]
    else:
        cfg.version_policy.specific.versions.extend(numbers)

    for t in sig.inputs:
        cfg.input.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
    for t in sig.outputs:
        cfg.output.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))

    cfg.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    cfg.dynamic_batching.preferred_batch_size.extend(sorted(set(options.preferred_batch_sizes)))

    kind = options.resolved_kind(spec)
    cfg.instance_group.add(
        count=options.instance_count,
        kind=pb.ModelInstanceGroup.KIND_GPU if kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU,
    )

    if options.ort_trt:
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        acc.parameters["precision_mode"] = options.ort_trt.upper()
        acc.parameters["max_workspace_size_bytes"] = str(1 << 30)

    if options.warmup:
        for batch in sorted({1, options.max_batch_size}):
            w = cfg.model_warmup.add(name=f"random_batch_{batch}", batch_size=batch, count=1)
            for t in sig.inputs:
                inp = w.inputs[t.name]
                inp.data_type = pb.DataType.Value(t.data_type)
                inp.dims.extend(t.dims)
                inp.random_data = True

    for key, value in _policy_parameters(sig, versions, spec).items():
        cfg.parameters[key].string_value = value
    return cfg, sig


def render(cfg: Any, sig: Signature, spec: BackendSpec) -> str:
    """config.pbtxt text: the template's header comment plus the message in text format."""
    from google.protobuf import text_format

    from policy_export.triton.templates import template_text

    def names(ts: list[WireTensor]) -> str:
        return ", ".join(t.describe() for t in ts)

    header = Template(template_text("config.pbtxt.tmpl"))
    return header.substitute(
        tool_version=__version__,
        name=cfg.name,
        server_version=TRITON_SERVER_VERSION,
        backend=spec.platform or spec.backend,
        inputs=names(sig.inputs),
        outputs=names(sig.outputs),
        body=text_format.MessageToString(cfg, use_short_repeated_primitives=True).rstrip() + "\n",
    )
