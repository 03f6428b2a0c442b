"""Triton model repositories in S3-compatible object storage: write a version, check a repository.

Triton reads ``s3://[host:port/]bucket/prefix`` repositories (the tritonserver in nvidia-pytriton
included) by listing keys: a "folder" exists as soon as one key starts with it, and a model's
versions are the numeric "folders" under it. S3 has no rename, so a version cannot appear at
once. What this module promises instead, and how:

- **Triton never loads half a version.** The published ``config.pbtxt`` always carries an
  explicit ``version_policy { specific { versions: [...] } }`` naming the complete versions:
  it is the commit record. The policy the user asked for (``latest:1``, ``all``,
  ``specific:...``) is kept in the config parameter :data:`POLICY_PARAM` and resolved against
  the committed versions at every publish. Files of a version being written can therefore sit
  in the repository without being served; ``config.pbtxt`` is written last, in one PUT.
- **Publish order.** (1) the new version's files are uploaded to a staging prefix *beside* the
  repository (``<prefix>.staging/...``; inside it, Triton would list them as a model), each with
  its SHA-256 so S3 refuses a corrupted upload; (2) every staged object's checksum is read back
  and compared with the local file; (3) each is copied server-side under ``NAME/N/`` and checked
  again; (4) ``config.pbtxt`` is written with a conditional PUT (``If-Match`` on the config read
  at the start, ``If-None-Match: *`` for a new model): a writer that lost a race cannot overwrite
  another's commit and drop its version; (5) the staging objects go.
- **One writer per model.** A lock object ``<prefix>/.NAME.lock`` is created with
  ``If-None-Match: *`` and carries an expiry; a writer killed by SIGKILL leaves it, and the next
  writer takes it over with ``If-Match`` on the stale lock's ETag once it has expired (two
  writers taking over the same stale lock: one wins). The lock is a file, not a folder: Triton
  ignores it.
- **Debris.** Version folders the committed config does not name are what a killed writer
  left; the next writer deletes them under the lock, and ``--check`` reports them.
- **No clobbering.** An existing version is never replaced (``--force`` is refused: replacing
  files in place under a committed version cannot be atomic in S3; write a new version number).

The repository logic itself (signature checks, config generation, offline validation) is the
local writer's (:mod:`policy_export.triton.repo`), run on a local mirror of the model folder:
downloading the committed versions costs their size, the price of one set of rules.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_export.errors import BadInputError, UnavailableError

#: Config parameter holding the version policy the user asked for (the published one is always ``specific``).
POLICY_PARAM = "policy_export.version_policy"
#: Config parameter listing every committed version (comma-separated), served or not: what "debris" is measured against.
VERSIONS_PARAM = "policy_export.versions"
CONFIG = "config.pbtxt"
#: A lock older than this (seconds since its last refresh, by the storage server's clock) may be taken over.
LOCK_TTL_S = 120.0
#: One PUT of a single object is limited to 5 GiB by S3.
MAX_OBJECT_BYTES = 5 * 1024**3
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def is_s3(url: str | os.PathLike[str] | None) -> bool:
    return isinstance(url, str) and url.startswith("s3://")


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` (or Triton's ``s3://host:port/bucket/prefix``) plus the endpoint to use."""

    bucket: str
    prefix: str
    endpoint: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint: str | None = None) -> S3Location:
        rest = url[len("s3://") :]
        parts = [p for p in rest.split("/") if p]
        if parts and re.fullmatch(r"[^/]+:\d{1,5}", parts[0]):  # Triton's form names the endpoint in the URL
            host = parts.pop(0)
            endpoint = endpoint or f"http://{host}"
        if not parts:
            raise BadInputError(f"{url}: expected s3://bucket/prefix (or s3://host:port/bucket/prefix)")
        bucket, prefix = parts[0], "/".join(parts[1:])
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise BadInputError(
                f"{url}: {bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')"
            )
        if endpoint is not None and not re.fullmatch(r"https?://[^\s/]+/?", endpoint):
            raise BadInputError(f"--s3-endpoint {endpoint!r}: expected http(s)://host:port")
        return cls(bucket, prefix, endpoint.rstrip("/") if endpoint else None)

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def triton_url(self) -> str:
        """The repository path tritonserver takes: ``s3://host:port/bucket/prefix`` with a custom endpoint."""
        if self.endpoint is None:
            return self.url
        host = re.sub(r"^https?://", "", self.endpoint)
        return f"s3://{host}/{self.bucket}/{self.prefix}".rstrip("/")


def client(loc: S3Location) -> Any:  # a botocore S3 client (untyped)
    """A boto3 S3 client from the usual AWS environment (keys, profile, region), bounded in time."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise UnavailableError(
            f"object-storage repositories need boto3: pip install 'policy-export[s3]' ({exc})"
        ) from exc
    cfg = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=loc.endpoint, config=cfg, region_name=region)


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def storage_errors(loc: S3Location, what: str) -> Iterator[None]:
    """botocore's errors as one line naming the repository and the fix; never a key or a secret."""
    try:
        import botocore.exceptions as bx
    except ImportError:  # pragma: no cover - client() already refused
        yield
        return
    where = loc.url + (f" at {loc.endpoint}" if loc.endpoint else "")
    try:
        yield
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError) as exc:
        raise BadInputError(
            f"{where}: {what}: the storage endpoint does not answer ({type(exc).__name__}); check --s3-endpoint / AWS_ENDPOINT_URL"
        ) from None
    except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
        raise BadInputError(
            f"{where}: {what}: no AWS credentials ({type(exc).__name__}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        ) from None
    except bx.ClientError as exc:
        code = _code(exc)
        if code in ("NoSuchBucket",) or (code == "404" and what.startswith("bucket")):
            raise BadInputError(f"{where}: bucket {loc.bucket!r} does not exist; create it or fix --repo") from None
        if code in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403",
            "InvalidToken",
            "ExpiredToken",
        ):
            raise BadInputError(
                f"{where}: {what}: the storage refused these credentials ({code}); check the AWS_* environment "
                "(the key itself is not printed)"
            ) from None
        raise BadInputError(f"{where}: {what} failed ({code or type(exc).__name__})") from None
    except bx.BotoCoreError as exc:
        raise BadInputError(f"{where}: {what} failed ({type(exc).__name__})") from None


def check_bucket(s3: Any, loc: S3Location) -> None:
    with storage_errors(loc, "bucket check"):
        s3.head_bucket(Bucket=loc.bucket)


def list_keys(s3: Any, loc: S3Location, prefix: str) -> dict[str, dict[str, Any]]:
    """Every key under ``prefix`` (paginated) -> its listing entry."""
    out: dict[str, dict[str, Any]] = {}
    with storage_errors(loc, "listing"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj
    return out


def sha256_b64(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return base64.b64encode(h.digest()).decode()


def _remote_sha256(s3: Any, loc: S3Location, key: str) -> str:
    with storage_errors(loc, f"checksum of {key}"):
        head = s3.head_object(Bucket=loc.bucket, Key=key, ChecksumMode="ENABLED")
    return str(head.get("ChecksumSHA256") or "")


# --------------------------------------------------------------------------------------------- lock


@dataclass
class ObjectLock:
    """``<prefix>/.NAME.lock``: created only if absent, refreshed while held, taken over once expired."""

    s3: Any
    loc: S3Location
    name: str
    ttl_s: float = LOCK_TTL_S
    etag: str = ""
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")

    @property
    def key(self) -> str:
        return self.loc.key(f".{self.name}.lock")

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "ttl_s": self.ttl_s, "written": time.time()}).encode()

    def acquire(self, wait_s: float, on_wait: Callable[[str], None] | None = None) -> None:
        import botocore.exceptions as bx

        deadline = time.monotonic() + max(0.0, wait_s)
        told = False
        while True:
            try:
                with storage_errors(self.loc, "taking the model lock"):
                    try:
                        self.etag = self.s3.put_object(
                            Bucket=self.loc.bucket, Key=self.key, Body=self._body(), IfNoneMatch="*"
                        )["ETag"]
                        return
                    except bx.ClientError as exc:
                        if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                            raise
                    stale = self._stale_etag()
                    if stale:
                        try:
                            self.etag = self.s3.put_object(
                                Bucket=self.loc.bucket, Key=self.key, Body=self._body(), IfMatch=stale
                            )["ETag"]
                            if on_wait is not None:
                                on_wait(f"took over the expired lock {self.key} (a writer that died)")
                            return
                        except bx.ClientError as exc:
                            if _code(exc) not in (
                                "PreconditionFailed",
                                "412",
                                "NoSuchKey",
                                "404",
                                "ConditionalRequestConflict",
                                "409",
                            ):
                                raise
            except BadInputError:
                raise
            if time.monotonic() >= deadline:
                raise BadInputError(
                    f"{self.loc.url}/{self.name}: another triton-repo write to this model holds {self.key} "
                    f"after {wait_s:g} s; wait for it to finish (a dead writer's lock expires after {self.ttl_s:g} s), "
                    "or raise --lock-wait"
                )
            if not told and on_wait is not None:
                on_wait(f"waiting for another triton-repo write to {self.loc.url}/{self.name} (lock {self.key})")
                told = True
            time.sleep(0.2)

    def _stale_etag(self) -> str:
        """The lock's ETag when it has expired (by the storage's clock: its LastModified vs its Date header)."""
        from email.utils import parsedate_to_datetime

        import botocore.exceptions as bx

        try:
            head = self.s3.head_object(Bucket=self.loc.bucket, Key=self.key)
        except bx.ClientError:
            return ""
        headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        try:
            now = parsedate_to_datetime(headers["date"]).timestamp()
        except (KeyError, TypeError, ValueError):
            now = time.time()
        try:
            ttl = float(
                json.loads(self.s3.get_object(Bucket=self.loc.bucket, Key=self.key)["Body"].read()).get(
                    "ttl_s", self.ttl_s
                )
            )
        except (ValueError, TypeError, AttributeError, bx.ClientError):
            ttl = self.ttl_s
        age = now - head["LastModified"].timestamp()
        return str(head["ETag"]) if age >= ttl else ""

    def refresh(self) -> None:
        """Extend the lease (a long upload); refused if someone took the lock over meanwhile."""
        import botocore.exceptions as bx

        with storage_errors(self.loc, "refreshing the model lock"):
            try:
                self.etag = self.s3.put_object(
                    Bucket=self.loc.bucket, Key=self.key, Body=self._body(), IfMatch=self.etag
                )["ETag"]
            except bx.ClientError as exc:
                if _code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                    raise BadInputError(
                        f"{self.loc.url}/{self.name}: this write's lock expired and another writer took it; "
                        "nothing was committed: run again"
                    ) from None
                raise

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.s3.delete_object(Bucket=self.loc.bucket, Key=self.key, IfMatch=self.etag)


# ------------------------------------------------------------------------------------- the model


def _config_policy(text: str) -> tuple[list[int] | None, str | None]:
    """(versions the published config commits, the user's policy parameter) of a config's text."""
    from google.protobuf import text_format

    from policy_export.triton.schema import model_config_pb2

    cfg = model_config_pb2().ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise BadInputError(f"{CONFIG}: not a Triton model config ({exc}); fix it or write to a new --model") from None
    user = cfg.parameters[POLICY_PARAM].string_value if POLICY_PARAM in cfg.parameters else None
    if user is None or VERSIONS_PARAM not in cfg.parameters:
        return None, user
    text_versions = cfg.parameters[VERSIONS_PARAM].string_value
    try:
        committed = [int(v) for v in text_versions.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(
            f"{CONFIG}: parameter {VERSIONS_PARAM} {text_versions!r} is not a list of versions"
        ) from None
    return committed, user


def resolve_policy(policy: str, versions: list[int]) -> list[int]:
    """The versions the user's policy selects among the committed ones."""
    from policy_export.triton.options import parse_version_policy

    kind, numbers = parse_version_policy(policy)
    ordered = sorted(versions)
    if kind == "all":
        return ordered
    if kind == "latest":
        return ordered[-numbers[0] :]
    return [v for v in ordered if v in numbers]


def commit_config_text(text: str, user_policy: str, committed: list[int]) -> str:
    """The config to publish: ``specific`` over ``committed`` (resolved by the user's policy), the user's
    policy kept in :data:`POLICY_PARAM`, the header comment kept."""
    from google.protobuf import text_format

    from policy_export.triton.schema import model_config_pb2

    cfg = model_config_pb2().ModelConfig()
    text_format.Parse(text, cfg)
    serving = resolve_policy(user_policy, committed)
    cfg.version_policy.Clear()
    cfg.version_policy.specific.versions.extend(serving)
    cfg.parameters[POLICY_PARAM].string_value = user_policy
    cfg.parameters[VERSIONS_PARAM].string_value = ",".join(map(str, sorted(committed)))
    lines = text.splitlines()
    header = []
    for line in lines:
        if line.startswith("#") or not line.strip():
            header.append(line)
        else:
            break
    body = text_format.MessageToString(cfg, use_short_repeated_primitives=True)
    return "\n".join(header).rstrip() + ("\n" if header else "") + body


@dataclass
class RemoteModel:
    """One model folder in object storage as it is now."""

    config_text: str | None
    config_etag: str | None
    committed: list[int]  # versions the config commits (every numeric folder for a config we did not write)
    user_policy: str | None
    keys: dict[str, dict[str, Any]]  # every key under NAME/

    def version_keys(self, loc: S3Location, name: str) -> dict[int, list[str]]:
        base = loc.key(name) + "/"
        out: dict[int, list[str]] = {}
        for key in self.keys:
            head, _, rest = key[len(base) :].partition("/")
            if rest and head.isdigit():
                out.setdefault(int(head), []).append(key)
        return out


def read_model(s3: Any, loc: S3Location, name: str) -> RemoteModel:
    import botocore.exceptions as bx

    keys = list_keys(s3, loc, loc.key(name) + "/")
    text = etag = None
    with storage_errors(loc, f"reading {name}/{CONFIG}"):
        try:
            obj = s3.get_object(Bucket=loc.bucket, Key=loc.key(name, CONFIG))
            text, etag = obj["Body"].read().decode(), str(obj["ETag"])
        except bx.ClientError as exc:
            if _code(exc) not in ("NoSuchKey", "404"):
                raise
    model = RemoteModel(text, etag, [], None, keys)
    on_disk = sorted(model.version_keys(loc, name))
    if text is None:
        return model
    committed, user = _config_policy(text)
    model.user_policy = user
    model.committed = sorted(committed) if committed is not None else on_disk
    return model


def _download(s3: Any, loc: S3Location, keys: list[str], base: str, dest: Path) -> None:
    for key in keys:
        target = dest / key[len(base) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        with storage_errors(loc, f"downloading {key}"):
            s3.download_file(loc.bucket, key, str(target))


def mirror(s3: Any, loc: S3Location, name: str, model: RemoteModel, dest: Path) -> None:
    """``dest`` = the committed model (config + committed versions), debris left out."""
    base = loc.key(name) + "/"
    dest.mkdir(parents=True, exist_ok=True)
    vkeys = model.version_keys(loc, name)
    wanted = [k for v in model.committed for k in vkeys.get(v, [])]
    _download(s3, loc, wanted, base, dest)
    if model.config_text is not None:
        (dest / CONFIG).write_text(model.config_text)


@dataclass
class S3WriteResult:
    location: S3Location
    name: str
    version: int
    files: list[str]
    versions: list[int]
    serving: list[int]
    user_policy: str
    removed_debris: list[str]
    backend: str
    signature: Any


#: Fault drill: a publish whose environment names one of its phases here SIGKILLs itself right after that phase
#: ("locked", "staged", "verified", "copied" = after the first file reached the repository, "copied-all", "committed").
FAULT_ENV = "POLICY_EXPORT_FAULT_KILL_AT"


def _fault(phase: str) -> None:
    if os.environ.get(FAULT_ENV) == phase:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


#: Test hook: called with a phase name at each step of a publish ("staged", "verified", "copied:<key>", "committed").
PhaseHook = Callable[[str], None]


def write_version_s3(
    artifact: Path,
    loc: S3Location,
    name: str,
    version: int,
    options: Mapping[str, Any] | None = None,
    force: bool = False,
    *,
    lock_wait_s: float = 300.0,
    lock_ttl_s: float = LOCK_TTL_S,
    on_wait: Callable[[str], None] | None = None,
    on_phase: PhaseHook | None = None,
) -> S3WriteResult:
    """Add version ``version`` of ``name`` to the repository at ``loc`` (see the module docstring for the order)."""
    from policy_export.triton.repo import _MODEL_NAME, write_version

    if force:
        raise BadInputError(
            "--force: a version in object storage is never replaced in place (S3 cannot swap a folder atomically, "
            "and clients pinned to it would run changed weights); write a new --version"
        )
    if not loc.prefix:
        raise BadInputError(
            f"{loc.url}: give a prefix (s3://{loc.bucket}/models): staging objects sit beside the repository, "
            "and at the bucket's root Triton would list them as a model"
        )
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise BadInputError(f"--model {name!r}: use letters, digits, '_', '-', '.' (starting with a letter or digit)")
    if not artifact.is_file():
        raise BadInputError(f"{artifact}: artifact file does not exist")
    if not lock_ttl_s >= 0:
        raise BadInputError(f"--lock-ttl {lock_ttl_s}: give seconds >= 0")
    hook = on_phase or (lambda _p: None)

    def phase(name: str) -> None:
        hook(name)
        _fault(name)

    s3 = client(loc)
    check_bucket(s3, loc)
    lock = ObjectLock(s3, loc, name, ttl_s=lock_ttl_s)
    lock.acquire(lock_wait_s, on_wait)
    phase("locked")
    staging = f"{loc.prefix.rstrip('/')}.staging/{name}-{uuid.uuid4().hex[:12]}/"
    try:
        model = read_model(s3, loc, name)
        if version in model.committed:
            raise BadInputError(
                f"{loc.url}/{name}/{version}: version {version} of {name} exists; versions in object storage are never "
                "replaced: write a new --version"
            )
        given = dict(options or {})
        user_policy = str(given.get("version_policy") or model.user_policy or _policy_of(model) or "latest:1")
        given["version_policy"] = user_policy
        with tempfile.TemporaryDirectory(prefix="policy-export-s3-") as tmp:
            local_repo = Path(tmp) / "repo"
            if model.config_text is not None:
                mirror(s3, loc, name, model, local_repo / name)
            res = write_version(artifact, local_repo, name, version, given, force=False, lock_wait_s=0)
            new_text = commit_config_text(
                (local_repo / name / CONFIG).read_text(), user_policy, sorted({*model.committed, version})
            )
            vdir = local_repo / name / str(version)
            files = sorted(p for p in vdir.rglob("*") if p.is_file())
            for f in files:
                if f.stat().st_size > MAX_OBJECT_BYTES:
                    raise BadInputError(f"{f.name}: larger than 5 GiB, the most one S3 PUT takes; not supported yet")
            # Debris of killed writers (uncommitted version folders): removed under the lock, never served.
            debris = [k for v, ks in model.version_keys(loc, name).items() if v not in model.committed for k in ks]
            with storage_errors(loc, "removing a killed writer's leftovers"):
                for key in debris:
                    s3.delete_object(Bucket=loc.bucket, Key=key)
            _remove_stale_staging(s3, loc, name)
            # (1) stage beside the repository, each object with its checksum (S3 refuses a corrupted body).
            digests: dict[str, str] = {}
            with storage_errors(loc, "staging the new version"):
                for f in files:
                    rel = f.relative_to(vdir).as_posix()
                    digests[rel] = sha256_b64(f)
                    with open(f, "rb") as body:
                        s3.put_object(
                            Bucket=loc.bucket, Key=staging + rel, Body=body,
                            ChecksumAlgorithm="SHA256", ChecksumSHA256=digests[rel],
                        )  # fmt: skip
                    lock.refresh()
            phase("staged")
            # (2) read every staged checksum back.
            for rel, digest in digests.items():
                if _remote_sha256(s3, loc, staging + rel) != digest:
                    raise BadInputError(
                        f"{loc.url}: staged {rel} does not have the checksum uploaded; nothing published"
                    )
            phase("verified")
            # (3) into the repository, uncommitted (the config does not name this version yet); checked again.
            final_keys = []
            with storage_errors(loc, "publishing the version's files"):
                for rel, digest in digests.items():
                    key = loc.key(name, str(version), rel)
                    s3.copy_object(
                        Bucket=loc.bucket, Key=key, CopySource={"Bucket": loc.bucket, "Key": staging + rel},
                        ChecksumAlgorithm="SHA256",
                    )  # fmt: skip
                    if _remote_sha256(s3, loc, key) != digest:
                        raise BadInputError(f"{loc.url}: {key} does not have the staged checksum; nothing published")
                    final_keys.append(key)
                    if len(final_keys) == 1:
                        phase("copied")
            phase("copied-all")
            lock.refresh()
            # (4) the commit: one conditional PUT of config.pbtxt.
            _commit(s3, loc, name, new_text, model.config_etag)
            phase("committed")
            serving = resolve_policy(user_policy, sorted({*model.committed, version}))
    finally:
        with contextlib.suppress(Exception):
            for key in list_keys(s3, loc, staging):
                s3.delete_object(Bucket=loc.bucket, Key=key)
        lock.release()
    return S3WriteResult(
        location=loc,
        name=name,
        version=version,
        files=[loc.key(name, CONFIG), *final_keys],
        versions=sorted({*model.committed, version}),
        serving=serving,
        user_policy=user_policy,
        removed_debris=debris,
        backend=res.backend,
        signature=res.signature,
    )


def _policy_of(model: RemoteModel) -> str | None:
    """The policy of a config this tool did not commit (no :data:`POLICY_PARAM`): its own version_policy."""
    if model.config_text is None:
        return None
    from google.protobuf import text_format

    from policy_export.triton.options import TritonOptions
    from policy_export.triton.schema import model_config_pb2

    cfg = model_config_pb2().ModelConfig()
    text_format.Parse(model.config_text, cfg)
    return TritonOptions.from_config(cfg).version_policy


def _commit(s3: Any, loc: S3Location, name: str, text: str, etag: str | None) -> None:
    import botocore.exceptions as bx

    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    body = text.encode()
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    with storage_errors(loc, f"committing {name}/{CONFIG}"):
        try:
            s3.put_object(
                Bucket=loc.bucket, Key=loc.key(name, CONFIG), Body=body,
                ChecksumAlgorithm="SHA256", ChecksumSHA256=digest, **cond,
            )  # fmt: skip
        except bx.ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise BadInputError(
                    f"{loc.url}/{name}/{CONFIG} changed while this write ran (another writer committed); nothing of "
                    "this version is served: run again"
                ) from None
            raise


def _remove_stale_staging(s3: Any, loc: S3Location, name: str) -> None:
    """Staging objects of this model's earlier writers (all dead: we hold the lock)."""
    prefix = f"{loc.prefix.rstrip('/')}.staging/{name}-"
    with storage_errors(loc, "removing stale staging objects"):
        for key in list_keys(s3, loc, prefix):
            s3.delete_object(Bucket=loc.bucket, Key=key)


# ------------------------------------------------------------------------------------------ check


@dataclass
class RemoteReport:
    name: str
    ok: bool
    backend: str = ""
    committed: list[int] = field(default_factory=list)
    serving: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Harmless leftovers (never served): reported, not a failure.
    warnings: list[str] = field(default_factory=list)


def check_remote(loc: S3Location, only: str | None = None) -> list[RemoteReport]:
    """``triton-repo --check s3://...``: every model's committed state, downloaded and checked offline
    like a local folder, plus what only object storage can get wrong (debris of killed writers,
    stale staging objects, a config that commits a version with no files)."""
    from policy_export.triton.validate import check_model

    s3 = client(loc)
    check_bucket(s3, loc)
    base = loc.key() + "/" if loc.prefix else ""
    names = sorted({k[len(base) :].split("/", 1)[0] for k in list_keys(s3, loc, base) if "/" in k[len(base) :]})
    if only is not None:
        names = [only] if only in names else []
    if not names:
        raise BadInputError(f"{loc.url}: no model folders (NAME/{CONFIG}) in this repository")
    reports = []
    for name in names:
        model = read_model(s3, loc, name)
        rep = RemoteReport(name=name, ok=True, committed=model.committed)
        if model.config_text is None:
            rep.problems.append(f"{CONFIG} is missing (a folder Triton would fail to load)")
        else:
            on_disk = model.version_keys(loc, name)
            missing = [v for v in model.committed if v not in on_disk]
            if missing:
                rep.problems.append(f"the config commits versions {missing} that have no files")
            debris = sorted(v for v in on_disk if v not in model.committed)
            if debris:
                rep.warnings.append(
                    f"uncommitted version folders {debris} (left by a killed writer; never served; the next "
                    "triton-repo write removes them)"
                )
            with tempfile.TemporaryDirectory(prefix="policy-export-s3check-") as tmp:
                local = Path(tmp) / name
                present = RemoteModel(
                    model.config_text,
                    model.config_etag,
                    [v for v in model.committed if v in on_disk],
                    model.user_policy,
                    model.keys,
                )
                mirror(s3, loc, name, present, local)
                report = check_model(local, expected_name=name)
                rep.backend = report.backend
                rep.problems.extend(report.problems)
            if model.user_policy is not None:
                rep.serving = resolve_policy(model.user_policy, model.committed)
        rep.ok = not rep.problems
        reports.append(rep)
    staging = list_keys(s3, loc, f"{loc.prefix.rstrip('/')}.staging/") if loc.prefix else {}
    if staging and reports:
        reports[0].warnings.append(
            f"{len(staging)} staging object(s) under {loc.prefix.rstrip('/')}.staging/ (a killed writer's; harmless, "
            "removed by the next write)"
        )
    return reports


def download_config(loc: S3Location, name: str) -> tuple[str, list[int]]:
    """The model's committed config text and its committed versions (``upgrade`` reads these)."""
    s3 = client(loc)
    check_bucket(s3, loc)
    model = read_model(s3, loc, name)
    if model.config_text is None:
        raise BadInputError(f"{loc.url}/{name}: no {CONFIG}: the repository does not hold model {name!r}")
    return model.config_text, model.committed
