"""Model-wide serving settings (``triton-repo``'s options): their defaults, checks, and reading them back.

A new version regenerates the model's one config from these; reading them back from the
existing config (:meth:`TritonOptions.from_config`) is what keeps a new version from silently
changing how the versions already there are served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from policy_export.errors import BadInputError
from policy_export.triton.backends import ServingBackend
from policy_export.triton.schema import model_config_pb2
from policy_export.triton_contract import ModelParam

# Ranges of the ModelConfig fields options land in (model_config.proto): beyond them protobuf raises
# mid-build, or the server misreads the value.
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


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
    #: ONNX Runtime intra-op threads per instance of a ``--backend python`` model (None: ORT's default).
    intra_op_threads: int | None = None

    def resolved_kind(self, spec: ServingBackend) -> str:
        return self.kind or ("gpu" if spec.key == "tensorrt" else "cpu")

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> TritonOptions:
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
        threads = (
            cfg.parameters[ModelParam.INTRA_OP_THREAD_COUNT].string_value
            if ModelParam.INTRA_OP_THREAD_COUNT in cfg.parameters
            else ""
        )
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
            intra_op_threads=int(threads) if threads else None,
        )


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


def check_options(options: TritonOptions, spec: ServingBackend) -> None:
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
    if options.intra_op_threads is not None:
        if options.intra_op_threads < 1:
            raise BadInputError(f"--intra-op-threads {options.intra_op_threads}: must be >= 1")
        if spec.key not in ("python", "python-openvino", "openvino"):
            raise BadInputError(
                "--intra-op-threads applies to --backend python models (their ONNX Runtime session) and OpenVINO models"
            )
    parse_version_policy(options.version_policy)
