"""The core served by a Triton Inference Server, over gRPC or HTTP (``tritonclient``).

Before the first step the backend checks, each call bounded by a timeout, that the server
is live and ready, that the model (and version) is ready, and that the model's
input/output signature and the policy metadata in its config ``parameters`` are what the
client will feed; any mismatch or an unreachable server is one line naming the URL, the
model and the fix. ``tritonclient`` is imported only here, when a Triton backend is created;
the answers are read and checked by :mod:`policy_export.runtime.triton_model` (re-exported here).

Two promises hold for the whole life of the client, not only at start:

- **Deadlines.** ``timeout_s`` bounds each *whole* call (gRPC deadline; on HTTP a gevent
  timeout around the call, since the socket timeout alone restarts with every byte and a
  server trickling a byte every 2 s held a call for a minute).
- **Identity.** The model's identity (served signature, normalization hash, the version's
  file sha256 from the config parameters) is recorded at the handshake and checked again
  before the first inference after anything that could mean another server answers: a
  failed or timed-out call, the gRPC channel dropping its connection, or a pause of more
  than ``RECHECK_IDLE_S`` between calls. Over HTTP the connection pool replaces a closed
  keep-alive connection silently (no error); a call that had to open a new connection has
  its answer kept only once the identity check after it passes (a tritonserver restarted
  with another model answered in 0.8 s, inside ``RECHECK_IDLE_S``). A difference is
  :class:`ModelChangedError`, one line; no chunk of the other model is returned.

The version policy is the client's: a number pins that version (another version is never
run: once the server stops serving it, the client fails over or stops, see ``reconnect``);
no version pins the newest at the handshake; ``"latest"`` (:data:`FOLLOW_LATEST`) follows the
newest version the server serves through a rolling upgrade. Before each chunk request a
following client asks the server for its versions (one small RPC); a newer version is taken
only after the full handshake on it passes (same input/output signature as the version
before; its own metadata, normalization hash and file sha256 recorded as the new identity),
and a replica serving only older versions is passed over, never gone back to. Every answer's
``model_version`` must be the version asked for; anything else is :class:`ModelChangedError`.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policy_export.errors import BadInputError, UnavailableError, first_line
from policy_export.runtime.backends import CoreHandle, ModelChangedError
from policy_export.runtime.triton_model import (  # the pure half of this module, re-exported: importers keep working
    PROTOCOLS,  # noqa: F401
    WIRE_TYPES,
    ModelIdentity,
    _parameters,  # noqa: F401
    check_signature,
    metadata_from_triton,
    resolve_version,
    split_url,
    wire_names,
)
from policy_export.spec import ArtifactMetadata

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
#: A pause between calls longer than this re-checks the model's identity first. Not the guard
#: against restarts (a tritonserver came back with another model in 0.8 s): reconnects are.
RECHECK_IDLE_S = 1.0
#: tritonclient's own channel options, plus a subchannel of the channel's own. gRPC otherwise
#: shares one subchannel per address across the process, with its reconnect backoff (1 s
#: growing 1.6x): a fresh client made to reconnect to a restarted server failed at once with
#: "failed to connect to all addresses" for seconds after the server was ready (measured: the
#: first success 6.9 s after readiness). Its own subchannel connects when asked.
GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 2**31 - 1),
    ("grpc.keepalive_timeout_ms", 20000),
    ("grpc.keepalive_permit_without_calls", False),
    ("grpc.http2.max_pings_without_data", 2),
    ("grpc.use_local_subchannel_pool", 1),
]
#: The version that follows the newest one served (rolling upgrades), instead of pinning one.
FOLLOW_LATEST = "latest"
#: The longest a readiness probe (one TCP connect) may take.
PROBE_TIMEOUT_S = 0.5
#: The longest ``close()`` waits for gRPC's connectivity poller to notice the unsubscription.
POLLER_EXIT_S = 1.0


class TritonCore(CoreHandle):
    """A model in a Triton model repository (written by ``policy-export triton-repo``).

    ``expect``: the identity the model must have (a reconnect to a replica); a difference is
    :class:`ModelChangedError` at the handshake.
    """

    def __init__(
        self,
        url: str,
        model: str,
        version: str | int | None = None,
        protocol: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        expect: ModelIdentity | None = None,
        expect_version: str = "",
    ) -> None:
        self.url, self.protocol = split_url(url, protocol)
        #: Replica URLs (``connect``); a reconnect tries the next one. Refused: serve another model.
        self.replicas: list[str] = [url]
        self.refused: set[str] = set()
        self._suspect = False
        self._last_ok = time.monotonic()
        self._channel: Any = None  # tritonclient's private grpc channel (untyped)
        #: New HTTP connections opened so far; None: not countable, so every call is checked.
        self._connects: int | None = 0
        self.model = model
        #: Following the newest version (``version="latest"``) instead of pinning one.
        self.follow = str(version).strip().lower() == FOLLOW_LATEST
        self.version = "" if version in (None, "") or self.follow else str(version)
        #: Following clients: the newest version this client has run (never gone back from).
        self.floor = int(expect_version) if self.follow and expect_version.isdigit() else 0
        self.timeout_s = float(timeout_s)
        if not self.timeout_s > 0:
            raise BadInputError(
                f"Triton timeout must be > 0 seconds, got {timeout_s}: a robot loop must never wait forever"
            )
        self.where = f"Triton {self.protocol}://{self.url} model {model!r}" + (
            f" version {self.version}" if self.version else ""
        )
        self.name = f"triton-{self.protocol}"
        self.wire: dict[str, str] = {}
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as tc
            else:
                import tritonclient.http as tc
        except ImportError as exc:
            raise UnavailableError(
                f"the Triton backend needs tritonclient: pip install 'policy-export[triton]' (or 'tritonclient[{self.protocol}]>=2.67') ({first_line(exc)})"
            ) from exc
        self._tc = tc
        self.client = self._new_client()
        self._timeout = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            if expect is None:
                self.max_batch_size, self.metadata, self.identity = self._handshake()
            else:
                self.identity = expect
                self.max_batch_size, self.metadata, _ = self._checked_handshake()
        except BaseException:
            self.close()
            raise
        self._watch_channel()
        self._last_ok = time.monotonic()

    @classmethod
    def connect(
        cls,
        urls: str | Sequence[str],
        model: str,
        version: str | int | None = None,
        protocol: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> TritonCore:
        """The first of several replicas (``urls``, or one URL / a comma-separated list) that answers
        the handshake; the others are kept for :meth:`reconnect`."""
        replicas = [u.strip() for u in ([urls] if isinstance(urls, str) else list(urls)) for u in u.split(",")]
        replicas = [u for u in replicas if u]
        if not replicas:
            raise BadInputError("no Triton URL given (TRITON_URL=host:port, several separated by commas)")
        errors: list[str] = []
        for i, url in enumerate(replicas):
            try:
                backend = cls(url, model, version, protocol, timeout_s=timeout_s)
            except UnavailableError as exc:
                errors.append(str(exc))
                continue
            backend.replicas = replicas[i:] + replicas[:i]
            return backend
        if len(errors) == 1:
            raise UnavailableError(errors[0])
        raise UnavailableError(f"no replica of {model!r} answered: " + " | ".join(errors))

    def reconnect(self) -> TritonCore:
        """A fresh connection to the next replica that serves the very same model (this one last).

        A replica whose model differs is refused for good (logged); when every replica is refused
        this raises :class:`ModelChangedError`, when none answers :class:`UnavailableError`.
        """
        order = self.replicas[1:] + self.replicas[:1]
        unreachable: list[str] = []
        for i, url in enumerate(order):
            if url in self.refused:
                continue
            try:
                backend = TritonCore(
                    url,
                    self.model,
                    FOLLOW_LATEST if self.follow else self.version,
                    self.protocol,
                    timeout_s=self.timeout_s,
                    expect=self.identity,
                    expect_version=self.version,
                )
            except ModelChangedError as exc:
                self.refused.add(url)
                log.error("refusing replica %s: %s", url, exc)
                continue
            except (UnavailableError, BadInputError) as exc:
                unreachable.append(str(exc))
                continue
            backend.replicas = order[i:] + order[:i]
            backend.refused = self.refused
            return backend
        if not unreachable:
            raise ModelChangedError(
                f"{self.where}: every replica ({', '.join(self.replicas)}) now serves a different model; "
                "refusing its actions: redeploy the model this client was started with, or restart the client"
            )
        raise UnavailableError(unreachable[-1])

    def _new_client(self) -> Any:  # tritonclient.{grpc,http}.InferenceServerClient (untyped)
        tc = self._tc
        if self.protocol == "grpc":
            return tc.InferenceServerClient(self.url, channel_args=GRPC_CHANNEL_ARGS)
        client = tc.InferenceServerClient(self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
        self._count_connects(client)
        return client

    def _watch_channel(self) -> None:
        """gRPC: a dropped connection means the next answer may come from another server.

        Subscribed only once the handshake has passed. The subscription starts gRPC's
        connectivity poller thread; a reconnect attempt against a server that is down closes
        its channel within milliseconds, and a poller still starting then called into the
        closed channel and printed ``ValueError: Cannot monitor channel state: Channel closed!``
        with its traceback on stderr."""
        channel = getattr(self.client, "_channel", None) if self.protocol == "grpc" else None
        if channel is not None:
            self._channel = channel
            channel.subscribe(self._on_channel, try_to_connect=False)

    def probe(self) -> bool:
        """True when some replica accepts a TCP connection: no RPC, no gRPC channel, nothing
        left behind, so it can run several times a second while reconnecting. tritonserver opens
        its ports once its models are loaded; a server that accepts but is not serving (frozen,
        overloaded) is caught by the full reconnect that follows, which the backoff spaces."""
        timeout = min(self.timeout_s, PROBE_TIMEOUT_S)
        for url in self.replicas:
            if url in self.refused:
                continue
            host, _, port = split_url(url, self.protocol)[0].rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                    return True
            except OSError:
                continue
        return False

    def _count_connects(self, client: Any) -> None:
        """Count the connections geventhttpclient's pool opens: it swaps a keep-alive connection the
        server closed for a new one without an error, so a restarted server answers the next call."""
        pool = getattr(getattr(client, "_client_stub", None), "_connection_pool", None)
        after_connect = getattr(pool, "after_connect", None)
        if pool is None or after_connect is None:
            log.warning(
                "%s: cannot see HTTP reconnects (tritonclient changed?); checking identity every call", self.where
            )
            self._connects = None
            return

        def counted(sock: object) -> None:
            after_connect(sock)
            if self._connects is not None:
                self._connects += 1

        pool.after_connect = counted

    def _on_channel(self, state: object) -> None:
        if getattr(state, "name", "") in ("IDLE", "TRANSIENT_FAILURE", "SHUTDOWN"):
            self._suspect = True

    def _call(self, what: str, fn: Callable[..., Any], *args: object, **kwargs: object) -> Any:  # a tritonclient result
        try:
            if self.protocol == "http":
                import gevent

                # The socket timeout restarts with every byte; this bounds the whole call.
                with gevent.Timeout(
                    self.timeout_s, TimeoutError(f"timed out: no complete answer within {self.timeout_s:g} s")
                ):
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs, **self._timeout)
        except Exception as exc:
            self._suspect = True
            if self.protocol == "http" and isinstance(exc, TimeoutError):
                self._reset_client()  # the connection is mid-answer: never read the rest of it
            raise UnavailableError(
                f"{self.where}: {what} failed: {first_line(exc)} (timeout {self.timeout_s:g} s); "
                "is the server running and the URL right (TRITON_URL)?"
            ) from None

    def _reset_client(self) -> None:
        old, self.client = self.client, None
        try:
            old.close()
        except Exception:
            pass
        self.client = self._new_client()

    def _same_model(self, expected: ModelIdentity, found: ModelIdentity) -> None:
        differs = expected.differences(found)
        if self.follow:  # another version of the same policy: its own weights and statistics, the same wire contract
            differs = [d for d in differs if d.startswith("input/output signature")]
        if differs:
            raise ModelChangedError(
                f"{self.where}: the server now serves a different model ({'; '.join(differs)}); "
                "refusing its actions: redeploy the model this client was started with, or restart the client"
            )

    def check_identity(self) -> None:
        """Ask the server again what it serves; ``ModelChangedError`` when it is not the model checked at start.

        Suspect until a check passes: after a failed one every call checks again, never runs as is."""
        self._suspect = True
        self._checked_handshake()
        self._suspect = False

    def _checked_handshake(self) -> tuple[int, ArtifactMetadata, ModelIdentity]:
        try:
            found = self._handshake()
        except ModelChangedError:
            raise
        except BadInputError as exc:  # another signature, or the pinned version gone: another model
            raise ModelChangedError(
                f"{exc}; the server now serves a different model than this client checked at start"
            ) from None
        self._same_model(self.identity, found[2])
        if self.follow:
            host, prev = _host_contract(found[1]), getattr(self, "metadata", None)
            if prev is not None and host != _host_contract(prev):
                raise ModelChangedError(
                    f"{self.where}: the newer version needs another robot-side setup ({host} vs "
                    f"{_host_contract(prev)}); this client keeps none of its actions: restart it on that version"
                )
            if found[2] != self.identity:
                log.info("%s: following the newest version, now %s", self.where, self.version)
            self.identity = found[2]
            self.metadata = found[1]
            self.floor = max(self.floor, int(self.version or 0))
        return found

    def _json(self, what: str, fn: Any) -> dict[str, Any]:
        if self.protocol == "grpc":
            out = self._call(what, fn, self.model, self.version, as_json=True)
            return out.get("config", out)
        return self._call(what, fn, self.model, self.version)

    def _handshake(self) -> tuple[int, ArtifactMetadata, ModelIdentity]:
        if not self._call("liveness check", self.client.is_server_live):
            raise UnavailableError(f"{self.where}: server is not live; check the server log")
        if not self._call("readiness check", self.client.is_server_ready):
            raise UnavailableError(f"{self.where}: server is live but not ready (still loading models?)")
        if self.follow:
            self.version = ""  # the newest, asked again
        if not self._call("model readiness check", self.client.is_model_ready, self.model, self.version):
            raise UnavailableError(f"{self.where}: model is not ready on the server; available: {self._available()}")
        model_meta = self._json("model metadata", self.client.get_model_metadata)
        self.version = resolve_version(self.version, model_meta, self.where)
        if self.follow and self.version.isdigit() and int(self.version) < self.floor:
            raise UnavailableError(
                f"{self.where}: serves only versions older than {self.floor}, which this client already runs "
                "(a replica not upgraded yet); trying another"
            )
        self.where = f"Triton {self.protocol}://{self.url} model {self.model!r} version {self.version or '?'}"
        config = self._json("model config", self.client.get_model_config)
        max_batch = int(config.get("max_batch_size", 0) or 0)
        meta = metadata_from_triton(config, model_meta, self.where, self.version)
        self.wire = wire_names(config)
        check_signature(meta, model_meta, max_batch, self.where, self.wire)
        return max_batch, meta, ModelIdentity.of(config, model_meta, meta, self.version)

    def _available(self) -> str:
        try:
            index = self._call("repository index", self.client.get_model_repository_index)
            if self.protocol == "grpc":
                index = [{"name": m.name, "version": m.version, "state": m.state} for m in index.models]
            names = [f"{m.get('name')}/{m.get('version', '?')} {m.get('state', '')}".strip() for m in index]
            return ", ".join(names) or "none"
        except UnavailableError:
            return "unknown"

    def _newer_version(self) -> bool:
        """Following clients: whether the server now serves another newest version than the one run."""
        meta = self._call(
            "model metadata",
            self.client.get_model_metadata,
            self.model,
            "",
            **({"as_json": True} if self.protocol == "grpc" else {}),
        )
        numeric = [int(v) for v in meta.get("versions", []) if str(v).isdigit()]
        return bool(numeric) and str(max(numeric)) != self.version

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        if (
            self._suspect
            or self._connects is None
            or time.monotonic() - self._last_ok > RECHECK_IDLE_S
            or (self.follow and self._newer_version())
        ):
            self.check_identity()
        connects = self._connects
        batch = len(feed["state"])
        step = self.max_batch_size if self.max_batch_size > 0 else batch
        parts = []
        for start in range(0, batch, step):
            part = {k: v[start : start + step] for k, v in feed.items()} if step < batch else feed
            parts.append(self._infer(part))
        if self._connects != connects:  # answered over a new connection: maybe by another server
            self.check_identity()
        self._last_ok = time.monotonic()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        tc = self._tc
        inputs = []
        for name in self.metadata.spec.input_names:
            arr = np.ascontiguousarray(feed[name])
            if arr.ndim == 1:  # a per-robot scalar travels as [B, 1] (triton_contract.wire_dims)
                arr = arr.reshape(-1, 1)
            inp = tc.InferInput(self.wire.get(name, name), list(arr.shape), WIRE_TYPES[arr.dtype.name])
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        out_name = self.wire.get("action_chunk", "action_chunk")
        outputs = [tc.InferRequestedOutput(out_name)]
        result = self._call(
            "inference", self.client.infer, self.model, inputs, model_version=self.version, outputs=outputs
        )
        answered = _answered_version(result)
        if self.version and answered not in (None, self.version):
            self._suspect = True
            raise ModelChangedError(
                f"{self.where}: version {answered} answered a request for version {self.version}; its actions are refused"
            )
        return np.asarray(result.as_numpy(out_name), dtype=np.float32)

    def close(self) -> None:
        channel, self._channel = getattr(self, "_channel", None), None
        if channel is not None:
            try:
                channel.unsubscribe(self._on_channel)
            except Exception:
                pass
            _await_poller_exit(channel)
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a client whose server is gone must not raise
                pass
            self.client = None


def _host_contract(meta: ArtifactMetadata) -> tuple[object, ...]:
    """What the robot side of a client is built from: a followed version must keep it."""
    spec = meta.spec
    return (spec.chunk_size, spec.n_action_steps, str(meta.image_format), repr(spec.host))


def _answered_version(result: Any) -> str | None:  # a tritonclient InferResult (untyped)
    """The ``model_version`` the server put in its answer (None where the client cannot read it)."""
    try:
        response = result.get_response()
    except Exception:
        return None
    version = response.get("model_version") if isinstance(response, dict) else getattr(response, "model_version", None)
    return None if version in (None, "") else str(version)


def _await_poller_exit(channel: Any) -> None:  # a grpc.Channel (private state read; untyped)
    """Wait (bounded) until gRPC's connectivity poller has seen that nobody is subscribed.

    The poller wakes every 0.2 s; a channel closed while it is between two waits makes it
    raise ``ValueError: Cannot monitor channel state: Channel closed!`` on its own thread,
    a traceback on stderr. After the unsubscription it ends at its next wake-up, so closing
    after that is quiet. Reads grpc's private ``_connectivity_state`` (checked: grpcio 1.67);
    without it, nothing is waited for."""
    state = getattr(channel, "_connectivity_state", None)
    lock = getattr(state, "lock", None)
    if lock is None:
        return
    deadline = time.monotonic() + POLLER_EXIT_S
    while time.monotonic() < deadline:
        with lock:
            if not getattr(state, "polling", False) or getattr(state, "callbacks_and_connectivities", None):
                return  # not polling, or someone else still subscribed (it keeps polling: nothing to wait for)
        time.sleep(0.01)


#: The name this had before "backend" was left to Triton's backends (kept for callers written against it).
TritonBackend = TritonCore
