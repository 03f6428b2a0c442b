"""Build a Triton ``config.pbtxt`` from exported artifacts' real signatures.

The config is assembled as Triton's own ``ModelConfig`` protobuf message (tritonclient's
``model_config_pb2``), not by pasting strings, so a typo'd field or enum cannot be written;
names, data types and dims come from the artifact file itself (``inspect_artifact``), never
from the checkpoint or the user. The text is wrapped in ``config.pbtxt.tmpl`` (package data
from ``model_repository_templates/``), whose header comment tells a reader what a client must
send.

The parts live beside it: which Triton backend serves which artifact (:mod:`.backends`), the
tensors on the wire (:mod:`.signature`), the serving options (:mod:`.options`) and the
``parameters`` contract (:mod:`policy_export.triton_contract`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from policy_export import __version__
from policy_export.artifacts import ArtifactInfo
from policy_export.errors import BadInputError
from policy_export.triton.backends import ServingBackend
from policy_export.triton.options import TritonOptions, check_options, parse_version_policy, profile_problems
from policy_export.triton.schema import TRITON_SERVER_VERSION, model_config_pb2
from policy_export.triton.signature import Signature, WireTensor, wire_signature
from policy_export.triton_contract import ModelParameters, NamingConvention, VersionParameters, encode_json

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


def file_sha256(path: Path) -> str:
    """The served file's sha256; an ONNX model with external data hashes its data files after it
    (the weights live there: a changed data file is another model)."""
    from policy_export.input_files import onnx_external_data

    h = hashlib.sha256()
    extra = onnx_external_data(path) if path.suffix == ".onnx" else []
    for part in extra:
        if not part.is_file():
            raise BadInputError(f"{path}: external data file {part.name} is missing next to it; copy it or re-export")
    for part in [path, *extra]:
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def policy_parameters(
    sig: Signature, versions: dict[int, ArtifactInfo], spec: ServingBackend, options: TritonOptions | None = None
) -> ModelParameters:
    """The typed ``parameters`` of a model serving ``versions`` (see :mod:`policy_export.triton_contract`)."""
    latest = versions[max(versions)].metadata
    s = latest.spec
    threaded = spec.key == "python" or spec.artifact_kind == "openvino"  # ORT's or OpenVINO's threads
    threads = options.intra_op_threads if options is not None and threaded else None
    return ModelParameters(
        policy_export_version=__version__,
        policy_type=s.policy_type,
        artifact_kind=latest.artifact_kind,
        image_format=latest.image_format,
        chunk_size=s.chunk_size,
        state_dim=s.state_dim,
        action_dim=s.action_dim,
        cameras=s.cameras,
        policy_input_names=tuple(t.policy_name for t in sig.inputs),
        policy_output_names=tuple(t.policy_name for t in sig.outputs),
        input_names=tuple(t.name for t in sig.inputs),
        output_names=tuple(t.name for t in sig.outputs),
        naming_convention=NamingConvention.NAME_INDEX if spec.named_index else NamingConvention.GRAPH_NAMES,
        # The latest version's values, for clients that do not pin a version; per-version in ``versions``.
        n_action_steps=s.n_action_steps,
        host=encode_json(s.host.to_dict()),
        family=encode_json(s.family),
        normalization_hash=s.norm_hash,
        versions={
            v: VersionParameters(
                n_action_steps=info.metadata.spec.n_action_steps,
                host=encode_json(info.metadata.spec.host.to_dict()),
                family=encode_json(info.metadata.spec.family),
                normalization_hash=info.metadata.spec.norm_hash,
                precision=info.metadata.precision,
                sha256=file_sha256(info.path),
                metadata=info.metadata.to_json(),
            )
            for v, info in sorted(versions.items())
        },
        intra_op_thread_count=threads,
    )


def build_config(
    name: str, versions: dict[int, ArtifactInfo], spec: ServingBackend, options: TritonOptions
) -> tuple[ModelConfig, Signature]:
    """The ModelConfig message for model ``name`` serving ``versions`` (all the same signature)."""
    pb = model_config_pb2()
    check_options(options, spec)
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
        tensor = cfg.input.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
        if t.reshape is not None:
            tensor.reshape.SetInParent()  # an empty shape is a field that is set: the model's [B]
            tensor.reshape.shape.extend(t.reshape)
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
                if t.data_type in ("TYPE_INT64", "TYPE_BOOL"):
                    # Token ids, masks, RTC lengths and delays: random ones are out of range, zeros are
                    # a valid request (no guidance).
                    inp.zero_data = True
                else:
                    inp.random_data = True

    for key, value in policy_parameters(sig, versions, spec, options).to_strings().items():
        cfg.parameters[key].string_value = value
    if spec.artifact_kind == "openvino":
        for key, value in openvino_parameters(versions, options).items():
            cfg.parameters[key].string_value = value
    return cfg, sig


def openvino_parameters(versions: dict[int, ArtifactInfo], options: TritonOptions) -> dict[str, str]:
    """What Triton's OpenVINO backend reads (and the Python model, and its test stand-in): latency mode, one
    stream, the threads, and ``HINT_BF16`` for bf16 artifacts. One config holds one hint, so the versions of
    a model must agree on their inference precision (checked offline, see version_check)."""
    params = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if options.intra_op_threads:
        params["INFERENCE_NUM_THREADS"] = str(options.intra_op_threads)
    hints = {openvino_hint(info) for info in versions.values()}
    if len(hints) > 1:
        raise BadInputError(
            f"versions {sorted(versions)} mix OpenVINO inference precisions ({', '.join(sorted(hints))}); one config "
            "holds one precision hint: serve them under different --name"
        )
    if hints == {"bf16"}:
        params["HINT_BF16"] = "YES"
    return params


def openvino_hint(info: ArtifactInfo) -> str:
    return str(info.metadata.quantization.get("inference_precision", "f32"))


def render(cfg: ModelConfig, sig: Signature, spec: ServingBackend) -> str:
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
