"""A rolling version upgrade across Triton replicas: load N+1, then unload N, one replica at a time.

Why this shape: Triton unloads whole models, not versions, and a model's ``version_policy`` decides
which versions one load serves. So each replica is reloaded twice through the load API with the
repository's config as an override (the repository's own config carries every version's policy
metadata and file sha256, which clients check):

1. ``specific: [old..., N]``: the replica loads N beside what it serves; Triton swaps the model in
   only once every version in the list is ready, so requests keep being answered meanwhile;
2. wait until N is ready there and its identity (sha256 in the served config) is the repository's;
3. ``specific: [N]``: the old versions go.

One replica at a time, so the others keep serving while one reloads; a failure stops the
rollout with the replicas done so far named (the rest still serve the old versions). Clients
pinned to the old version fail over to a replica not upgraded yet, then hold (they never run
another version); clients following the newest switch once their replica serves N (see
:mod:`policy_export.runtime.triton`).

Which versions a repository holds comes from the repository (local folder or ``s3://``), not
from a server: an upgrade to a version the repository does not hold is refused before any
replica is touched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_export.errors import BadInputError, UnavailableError, first_line

#: Generous: a reload localizes the model from object storage and warms it up.
LOAD_TIMEOUT_S = 300.0


@dataclass
class RepoModel:
    """A model as its repository holds it: the config text and the versions committed there."""

    config_text: str
    versions: list[int]
    where: str


def read_repo_model(repo: str, model: str, endpoint: str | None = None) -> RepoModel:
    from policy_export.triton.s3 import S3Location, download_config, is_s3

    if is_s3(repo):
        loc = S3Location.parse(repo, endpoint)
        text, versions = download_config(loc, model)
        return RepoModel(text, versions, f"{loc.url}/{model}")
    from policy_export.triton.validate import CONFIG, version_dirs

    folder = Path(repo) / model
    if not (folder / CONFIG).is_file():
        raise BadInputError(f"{folder}: no {CONFIG}: the repository does not hold model {model!r}")
    return RepoModel((folder / CONFIG).read_text(), sorted(version_dirs(folder)), str(folder))


def config_json(text: str, versions: list[int]) -> str:
    """The repository's config as the load API's JSON override, serving exactly ``versions``."""
    from google.protobuf import json_format, text_format

    from policy_export.triton.schema import model_config_pb2

    cfg = model_config_pb2().ModelConfig()
    text_format.Parse(text, cfg)
    cfg.version_policy.Clear()
    cfg.version_policy.specific.versions.extend(sorted(versions))
    return json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True))


def version_sha256(text: str, version: int) -> str:
    from google.protobuf import text_format

    from policy_export.triton.schema import model_config_pb2
    from policy_export.triton_contract import VersionParam, version_key

    cfg = model_config_pb2().ModelConfig()
    text_format.Parse(text, cfg)
    key = version_key(str(version), VersionParam.SHA256)
    return cfg.parameters[key].string_value if key in cfg.parameters else ""


@dataclass
class ReplicaStep:
    url: str
    before: list[int]
    after: list[int] = field(default_factory=list)
    load_s: float = float("nan")
    retire_s: float = float("nan")
    skipped: bool = False


def _client(url: str) -> Any:  # tritonclient.grpc.InferenceServerClient (untyped)
    import tritonclient.grpc as grpcclient

    from policy_export.runtime.triton_model import split_url

    address, _ = split_url(url, "grpc")
    return grpcclient.InferenceServerClient(address)


def ready_versions(client: Any, model: str, timeout_s: float) -> list[int]:
    index = client.get_model_repository_index(as_json=True, client_timeout=timeout_s).get("models", [])
    return sorted(
        int(m["version"])
        for m in index
        if m.get("name") == model and m.get("state") == "READY" and str(m.get("version", "")).isdigit()
    )


def upgrade(
    urls: list[str],
    model: str,
    version: int,
    repo: RepoModel,
    *,
    timeout_s: float = LOAD_TIMEOUT_S,
    rpc_timeout_s: float = 10.0,
    on_step: Callable[[str], None] | None = None,
) -> list[ReplicaStep]:
    """Roll ``version`` of ``model`` out to every replica in ``urls``, one at a time (module docstring)."""
    say = on_step or (lambda _m: None)
    if version not in repo.versions:
        held = ", ".join(map(str, repo.versions)) or "none"
        raise BadInputError(
            f"{repo.where}: the repository does not hold version {version} (it holds {held}); publish it first "
            "(policy-export triton-repo --version ...)"
        )
    want_sha = version_sha256(repo.config_text, version)
    clients = []
    for url in urls:  # every replica reachable before any is touched
        try:
            c = _client(url)
            if not c.is_server_ready(client_timeout=rpc_timeout_s):
                raise UnavailableError(f"{url}: server is not ready")
            clients.append(c)
        except UnavailableError:
            raise
        except Exception as exc:
            raise UnavailableError(f"{url}: replica does not answer ({first_line(exc)}); nothing was changed") from None
    steps: list[ReplicaStep] = []
    for url, c in zip(urls, clients, strict=True):
        try:
            before = ready_versions(c, model, rpc_timeout_s)
            step = ReplicaStep(url, before)
            if before == [version]:
                step.after, step.skipped = before, True
                say(f"{url}: already serves only version {version}")
                steps.append(step)
                continue
            t0 = time.monotonic()
            c.load_model(model, config=config_json(repo.config_text, [*before, version]), client_timeout=timeout_s)
            _wait_ready(c, model, version, timeout_s, url)
            served = c.get_model_config(model, str(version), as_json=True, client_timeout=rpc_timeout_s)["config"]
            got = served.get("parameters", {}).get(f"version.{version}.sha256", {}).get("string_value", "")
            if want_sha and got != want_sha:
                raise UnavailableError(
                    f"{url}: version {version} loaded with file sha256 {got[:12] or '?'}, the repository says "
                    f"{want_sha[:12]}; stopped before retiring anything there"
                )
            step.load_s = time.monotonic() - t0
            say(f"{url}: version {version} ready beside {before or 'nothing'} in {step.load_s:.1f} s")
            t1 = time.monotonic()
            c.load_model(model, config=config_json(repo.config_text, [version]), client_timeout=timeout_s)
            _wait_ready(c, model, version, timeout_s, url)
            step.retire_s = time.monotonic() - t1
            step.after = ready_versions(c, model, rpc_timeout_s)
            say(f"{url}: now serves {step.after} (old versions unloaded in {step.retire_s:.1f} s)")
            steps.append(step)
        except UnavailableError:
            raise
        except Exception as exc:
            done = ", ".join(s.url for s in steps) or "none"
            raise UnavailableError(
                f"{url}: upgrade to version {version} failed ({first_line(exc)}); upgraded so far: {done}; the "
                "others still serve their old versions"
            ) from None
        finally:
            c.close()
    return steps


def _wait_ready(client: Any, model: str, version: int, timeout_s: float, url: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not client.is_model_ready(model, str(version), client_timeout=min(10.0, timeout_s)):
        if time.monotonic() > deadline:
            raise UnavailableError(f"{url}: version {version} of {model} not ready after {timeout_s:g} s")
        time.sleep(0.1)
