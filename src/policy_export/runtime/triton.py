"""The core served by a Triton Inference Server, over gRPC or HTTP (``tritonclient``).

Before the first step the backend checks, each call bounded by a timeout, that the server
is live and ready, that the model (and version) is ready, and that the model's
input/output signature and the policy metadata in its config ``parameters`` are what the
client will feed; any mismatch or an unreachable server is one line naming the URL, the
model and the fix. Every request carries a timeout too, so a robot loop never waits
forever on a dead server. ``tritonclient`` is imported only here, when a Triton backend
is created.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from policy_export.errors import BadInputError, UnavailableError
from policy_export.runtime.backends import Backend
from policy_export.spec import METADATA_KEY, ArtifactMetadata, CameraSpec, PolicySpec

DEFAULT_TIMEOUT_S = 5.0
PROTOCOLS = ("grpc", "http")
#: numpy dtype name <-> Triton wire type, for the types an exported core uses.
WIRE_TYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8"}


def split_url(url: str, protocol: str | None) -> tuple[str, str]:
    """``host:port`` and protocol; a ``grpc://`` / ``http://`` prefix picks the protocol."""
    for scheme in PROTOCOLS:
        prefix = f"{scheme}://"
        if url.startswith(prefix):
            if protocol not in (None, scheme):
                raise BadInputError(f"Triton URL {url!r} says {scheme} but protocol={protocol!r} was asked for")
            return url[len(prefix) :].rstrip("/"), scheme
    if url.startswith("https://"):
        raise BadInputError(
            f"Triton URL {url!r}: TLS is not supported by this client; use a plain http:// or grpc:// URL"
        )
    protocol = protocol or "grpc"
    if protocol not in PROTOCOLS:
        raise BadInputError(f"Triton protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return url.rstrip("/"), protocol


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def _optional_float(text: str | None) -> float | None:
    if text is None or text.strip().lower() in ("", "none", "null"):
        return None
    return float(text)


def metadata_from_triton(config: dict[str, Any], model_meta: dict[str, Any], where: str) -> ArtifactMetadata:
    """The policy metadata a Triton model carries: the full artifact metadata JSON in the
    ``policy_export`` parameter when present, else rebuilt from the model's signature and
    the individual policy parameters (``chunk_size``, ``n_action_steps``, ...)."""
    params = _parameters(config)
    if params.get(METADATA_KEY):
        try:
            return ArtifactMetadata.from_json(params[METADATA_KEY])
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInputError(
                f"{where}: config parameter {METADATA_KEY!r} is not policy-export metadata ({exc})"
            ) from exc
    missing = [k for k in ("chunk_size", "n_action_steps") if not params.get(k)]
    if missing:
        raise BadInputError(
            f"{where}: model config has no policy parameters ({', '.join(missing)}); "
            "generate the repository with `policy-export triton-repo` so the client can check what it talks to"
        )
    inputs = {i["name"]: i for i in model_meta.get("inputs", [])}
    outputs = {o["name"]: o for o in model_meta.get("outputs", [])}
    if "state" not in inputs or "action_chunk" not in outputs:
        raise BadInputError(
            f"{where}: model signature {sorted(inputs)} -> {sorted(outputs)} is not a policy-export core "
            "(needs input 'state' and output 'action_chunk')"
        )
    image_names = [n for n in inputs if n != "state"]
    camera_keys = json.loads(params["camera_keys"]) if params.get("camera_keys") else None
    uint8 = any(inputs[n]["datatype"] == "UINT8" for n in image_names)
    cameras = []
    for i, name in enumerate(image_names):
        dims = [int(d) for d in inputs[name]["shape"]][-3:]
        shape = (dims[2], dims[0], dims[1]) if uint8 else (dims[0], dims[1], dims[2])
        if camera_keys:
            key = camera_keys[i]
        elif name.startswith("image_"):
            key = "observation.images." + name.removeprefix("image_")
        else:
            raise BadInputError(
                f"{where}: model config does not say which LeRobot camera feeds input {name!r} (parameter camera_keys); "
                "regenerate the repository with `policy-export triton-repo`"
            )
        cameras.append(CameraSpec(key=key, input_name=name, shape=shape))  # type: ignore[arg-type]
    out_dims = [int(d) for d in outputs["action_chunk"]["shape"]]
    spec = PolicySpec(
        policy_type=params.get("policy_type", "act"),
        state_key=params.get("state_key", "observation.state"),
        state_dim=int(inputs["state"]["shape"][-1]),
        action_key=params.get("action_key", "action"),
        action_dim=out_dims[-1],
        cameras=tuple(cameras),
        chunk_size=int(params["chunk_size"]),
        n_action_steps=int(params["n_action_steps"]),
        temporal_ensemble_coeff=_optional_float(params.get("temporal_ensemble_coeff")),
        normalization=json.loads(params["normalization"]) if params.get("normalization") else {},
        norm_hash=params.get("norm_hash", ""),
    )
    return ArtifactMetadata(
        spec=spec,
        artifact_kind=params.get("artifact_kind", "triton"),
        image_format="uint8" if uint8 else "float32",
        precision=params.get("precision", "fp32"),
    )


def check_signature(meta: ArtifactMetadata, model_meta: dict[str, Any], max_batch_size: int, where: str) -> None:
    """The server's inputs/outputs must be exactly what the client will send and read."""
    problems = []
    expected = {**meta.input_shapes(), "action_chunk": ("batch", meta.spec.chunk_size, meta.spec.action_dim)}
    dtypes = {n: {WIRE_TYPES[d]} for n, d in meta.input_dtypes().items()}
    dtypes["action_chunk"] = {"FP32", "FP16"} if meta.precision == "fp16" else {"FP32"}
    served = {t["name"]: t for t in [*model_meta.get("inputs", []), *model_meta.get("outputs", [])]}
    for name, shape in expected.items():
        if name not in served:
            problems.append(f"no tensor {name!r}")
            continue
        dims = [int(d) for d in served[name]["shape"]]
        want = [-1, *shape[1:]]
        if max_batch_size == 0 and len(dims) == len(shape) - 1:
            dims = [-1, *dims]
        if (
            len(dims) != len(want)
            or any(d != w for d, w in zip(dims[1:], want[1:], strict=False))
            or dims[0] not in (-1, 1)
        ):
            problems.append(f"{name} shape {dims} != {want}")
        if served[name]["datatype"] not in dtypes[name]:
            problems.append(f"{name} type {served[name]['datatype']} != {'|'.join(sorted(dtypes[name]))}")
    extra = sorted(set(served) - set(expected))
    if extra:
        problems.append(f"unexpected tensors {extra}")
    if problems:
        raise BadInputError(
            f"{where}: served model differs from its policy metadata: {'; '.join(problems)}; "
            "regenerate the repository from the exported artifact (policy-export triton-repo)"
        )


class TritonBackend(Backend):
    """A model in a Triton model repository (written by ``policy-export triton-repo``)."""

    def __init__(
        self,
        url: str,
        model: str,
        version: str | int | None = None,
        protocol: str | None = "grpc",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url, self.protocol = split_url(url, protocol)
        self.model = model
        self.version = "" if version in (None, "") else str(version)
        self.timeout_s = float(timeout_s)
        self.where = f"Triton {self.protocol}://{self.url} model {model!r}" + (
            f" version {self.version}" if self.version else ""
        )
        self.name = f"triton-{self.protocol}"
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as tc
            else:
                import tritonclient.http as tc
        except ImportError as exc:
            raise UnavailableError(
                f"the Triton backend needs tritonclient: pip install 'policy-export[triton]' (or 'tritonclient[{self.protocol}]>=2.67') ({_one_line(exc)})"
            ) from exc
        self._tc = tc
        if self.protocol == "grpc":
            self.client = tc.InferenceServerClient(self.url)
            self._timeout = {"client_timeout": self.timeout_s}
        else:
            self.client = tc.InferenceServerClient(
                self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
            self._timeout = {}
        try:
            self.max_batch_size, self.metadata = self._handshake()
        except BaseException:
            self.close()
            raise

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs, **self._timeout)
        except Exception as exc:
            raise UnavailableError(
                f"{self.where}: {what} failed: {_one_line(exc)} (timeout {self.timeout_s:g} s); "
                "is the server running and the URL right (TRITON_URL)?"
            ) from None

    def _json(self, what: str, fn: Any) -> dict[str, Any]:
        if self.protocol == "grpc":
            out = self._call(what, fn, self.model, self.version, as_json=True)
            return out.get("config", out)
        return self._call(what, fn, self.model, self.version)

    def _handshake(self) -> tuple[int, ArtifactMetadata]:
        if not self._call("liveness check", self.client.is_server_live):
            raise UnavailableError(f"{self.where}: server is not live; check the server log")
        if not self._call("readiness check", self.client.is_server_ready):
            raise UnavailableError(f"{self.where}: server is live but not ready (still loading models?)")
        if not self._call("model readiness check", self.client.is_model_ready, self.model, self.version):
            raise UnavailableError(f"{self.where}: model is not ready on the server; available: {self._available()}")
        model_meta = self._json("model metadata", self.client.get_model_metadata)
        config = self._json("model config", self.client.get_model_config)
        max_batch = int(config.get("max_batch_size", 0) or 0)
        meta = metadata_from_triton(config, model_meta, self.where)
        check_signature(meta, model_meta, max_batch, self.where)
        return max_batch, meta

    def _available(self) -> str:
        try:
            index = self._call("repository index", self.client.get_model_repository_index)
            if self.protocol == "grpc":
                index = [{"name": m.name, "version": m.version, "state": m.state} for m in index.models]
            names = [f"{m.get('name')}/{m.get('version', '?')} {m.get('state', '')}".strip() for m in index]
            return ", ".join(names) or "none"
        except UnavailableError:
            return "unknown"

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        batch = len(feed["state"])
        step = self.max_batch_size if self.max_batch_size > 0 else batch
        parts = []
        for start in range(0, batch, step):
            part = {k: v[start : start + step] for k, v in feed.items()} if step < batch else feed
            parts.append(self._infer(part))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        tc = self._tc
        inputs = []
        for name in self.metadata.spec.input_names:
            arr = np.ascontiguousarray(feed[name])
            inp = tc.InferInput(name, list(arr.shape), WIRE_TYPES[arr.dtype.name])
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [tc.InferRequestedOutput("action_chunk")]
        result = self._call(
            "inference", self.client.infer, self.model, inputs, model_version=self.version, outputs=outputs
        )
        return np.asarray(result.as_numpy("action_chunk"), dtype=np.float32)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a client whose server is gone must not raise
                pass
            self.client = None
