"""Write one version of one model into a Triton model repository, atomically.

Layout (what Triton expects)::

    REPO/NAME/config.pbtxt
    REPO/NAME/N/model.onnx   (+ its external-data files)   onnxruntime_onnx
    REPO/NAME/N/model.onnx + model.py                       --backend python
    REPO/NAME/N/model.plan + model.plan.json (sidecar)      tensorrt_plan
    REPO/NAME/N/model.pt                                    pytorch_libtorch

Rules, and why:

- One config serves every version of a model, so a new version must have the same
  input/output signature as the config; otherwise it is refused with the differences spelled
  out (a different signature is a different model: use a new name). For the same reason
  the serving options start from that config: a new version changes only what is asked.
- An existing version is never replaced without ``force``; other versions are never touched
  (their files are hard-linked into the new state, so they keep their bytes and inodes).
- One writer per model at a time: a lock file per model (``REPO/.NAME.lock``, ``fcntl.flock``)
  serialises concurrent writers, and each decides what to keep from the repository as it is
  under the lock. Two writers adding versions 2 and 3 both land; two writing version 2
  without ``force``: the second is refused.
- Atomic: the complete new model folder (old versions + new version + regenerated config)
  is built in a staging folder, validated offline, and only then swapped in with two
  renames. Any failure before the swap leaves the repository exactly as it was. The staging
  folder sits *beside* the repository, not in it, because Triton treats every folder in a
  repository, hidden ones included, as a model and would fail on a half-written one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy_export.artifacts import ArtifactInfo, inspect_artifact, tensorrt_sidecar
from policy_export.errors import BadInputError
from policy_export.fsutil import atomic_directory, refuse_inputs, remove_stale_staging
from policy_export.input_files import artifact_files, onnx_external_locations, tokenizer_sidecar
from policy_export.triton.backends import ServingBackend, backend_for, backend_from_config
from policy_export.triton.config import build_config, render
from policy_export.triton.lock import LOCK_WAIT_S, model_lock
from policy_export.triton.options import TritonOptions
from policy_export.triton.signature import Signature, signature_differences, wire_signature
from policy_export.triton.validate import (
    CONFIG,
    MAX_VERSION,
    ModelReport,
    check_model,
    config_signature,
    parse_config,
    version_dirs,
)

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

#: Matched with ``fullmatch``: ``$`` after ``match`` also accepts a trailing newline ("act\n" made ``.act\n.lock``).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


@dataclass
class WriteResult:
    model_dir: Path
    version: int
    backend: str
    files: list[Path]
    signature: Signature
    versions: list[int]
    replaced: bool
    report: ModelReport
    options: TritonOptions


def onnx_external_files(path: Path) -> list[str]:
    """Relative paths of the external-data files an ONNX model references."""
    locations = onnx_external_locations(path)
    for loc in sorted(locations):
        if Path(loc).is_absolute() or ".." in Path(loc).parts:
            raise BadInputError(
                f"{path}: external data location {loc!r} must be a plain relative path to travel with it"
            )
        if not (path.parent / loc).exists():
            raise BadInputError(f"{path}: external data file {loc} is missing next to it; copy it or re-export")
    return sorted(locations)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _replicate(src_dir: Path, dst_dir: Path, skip: set[str]) -> None:
    """Mirror ``src_dir`` into ``dst_dir`` with hard links (files keep their inodes and bytes)."""
    for entry in src_dir.iterdir():
        if entry.name in skip:
            continue
        target = dst_dir / entry.name
        if entry.is_dir() and not entry.is_symlink():
            target.mkdir()
            _replicate(entry, target, set())
        else:
            _link_or_copy(entry, target)


def _staging_root(repo: Path) -> Path:
    """Beside the repository when that is the same filesystem (rename stays atomic), else inside it."""
    parent = repo.parent
    try:
        if os.access(parent, os.W_OK) and parent.stat().st_dev == repo.stat().st_dev:
            return parent
    except OSError:
        pass
    return repo


def _copy_artifact(info: ArtifactInfo, spec: ServingBackend, vdir: Path) -> list[Path]:
    from policy_export.triton.templates import template_text

    vdir.mkdir()
    dest = vdir / spec.filename
    shutil.copy2(info.path, dest)
    files = [dest]
    if spec.artifact_kind == "onnx":
        for loc in onnx_external_files(info.path):
            target = vdir / loc
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(info.path.parent / loc, target)
            files.append(target)
    if spec.artifact_kind == "tensorrt":
        side = vdir / (spec.filename + ".json")
        shutil.copy2(tensorrt_sidecar(info.path), side)
        files.append(side)
    for suffix, name in spec.companions:  # e.g. an OpenVINO IR's weights
        shutil.copy2(info.path.with_suffix(suffix), vdir / name)
        files.append(vdir / name)
    if spec.python_model:
        (vdir / "model.py").write_text(template_text(spec.python_model))
        files.append(vdir / "model.py")
    files += _copy_tokenizer(info, dest)
    return files


def _copy_tokenizer(info: ArtifactInfo, dest: Path) -> list[Path]:
    """A language model's ``<artifact>.tokenizer.json`` beside the served file (same suffix rule), checked
    against the sha256 its metadata records: a robot host takes it from the repository with the model."""
    import hashlib

    decl = info.metadata.spec.host.tokenizer
    if not decl:
        return []
    src = tokenizer_sidecar(info.path)
    if not src.is_file():
        raise BadInputError(
            f"{src}: missing; {info.path.name} tokenizes its task on the robot and its tokenizer travels with it: "
            "copy it beside the artifact or export again"
        )
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if decl.get("sha256") and digest != decl["sha256"]:
        raise BadInputError(
            f"{src}: sha256 {digest[:12]}... is not the {str(decl['sha256'])[:12]}... the artifact's metadata records; "
            "export again"
        )
    target = tokenizer_sidecar(dest)
    shutil.copy2(src, target)
    return [target]


def _existing_config(model_dir: Path) -> ModelConfig | None:
    """The model's current config (None for a new model); a folder we did not write is refused."""
    cfg_path = model_dir / CONFIG
    if not cfg_path.exists():
        if model_dir.exists() and any(model_dir.iterdir()):
            raise BadInputError(
                f"{model_dir}: folder exists without {CONFIG}; not a model written by this tool, pick another --model"
            )
        return None
    try:
        return parse_config(cfg_path)
    except BadInputError as exc:
        raise BadInputError(f"{exc}; fix it (policy-export triton-repo --check) or write to a new --model") from exc


def _backend(model_dir: Path, cfg: ModelConfig | None, artifact_kind: str, choice: str) -> ServingBackend:
    """The backend for the new version; an existing model keeps the one its config names."""
    if cfg is None:
        return backend_for(artifact_kind, choice)
    kind = cfg.parameters["artifact_kind"].string_value if "artifact_kind" in cfg.parameters else ""
    existing = backend_from_config(cfg.platform, cfg.backend, kind)
    if existing is not None and existing.artifact_kind == artifact_kind:
        spec = backend_for(artifact_kind, choice)
        if spec.key == existing.key:
            return spec
    else:
        spec = backend_for(artifact_kind)
    raise BadInputError(
        f"{model_dir}: model is served by {cfg.platform or cfg.backend!r}, the new version would need "
        f"{spec.platform or spec.backend!r}; one model has one backend: use a new --model"
    )


def resolve_options(options: TritonOptions | Mapping[str, Any] | None, cfg: ModelConfig | None) -> TritonOptions:
    """A :class:`TritonOptions` as given; a mapping (or None) changes only the fields it names,
    starting from the existing config's options, or from the defaults for a new model."""
    if isinstance(options, TritonOptions):
        return options
    base = TritonOptions() if cfg is None else TritonOptions.from_config(cfg)
    try:
        return dataclasses.replace(base, **dict(options or {}))
    except TypeError as exc:
        raise BadInputError(f"unknown Triton option ({exc})") from exc


@dataclass
class _Plan:
    """Everything a write decides from the repository as it is now (under the lock)."""

    spec: ServingBackend
    options: TritonOptions
    versions: dict[int, ArtifactInfo]
    text: str
    replaced: bool
    sig: Signature


def _plan(
    info: ArtifactInfo,
    model_dir: Path,
    name: str,
    version: int,
    options: TritonOptions | Mapping[str, Any] | None,
    force: bool,
) -> _Plan:
    artifact = info.path
    cfg = _existing_config(model_dir)
    resolved = resolve_options(options, cfg)
    spec = _backend(model_dir, cfg, info.kind, resolved.backend)
    new_sig = wire_signature(info, spec)
    old_sig, existing = (None, {}) if cfg is None else (config_signature(cfg), version_dirs(model_dir))

    replaced = version in existing
    if replaced and not force:
        raise BadInputError(f"{existing[version]}: version {version} of {name} exists; pass --force to replace it")
    others = {v: p for v, p in existing.items() if v != version}
    if old_sig is not None and others:
        diffs = signature_differences(old_sig, new_sig)
        if diffs:
            raise BadInputError(
                f"{artifact}: its signature differs from model {name}'s config ({'; '.join(diffs)}); "
                "all versions of a model share one config: use a new --model"
            )

    versions: dict[int, ArtifactInfo] = {v: inspect_artifact(p / spec.filename) for v, p in others.items()}
    versions[version] = info
    new_cfg, sig = build_config(name, versions, spec, resolved)
    return _Plan(spec, resolved, versions, render(new_cfg, sig, spec), replaced, sig)


def write_version(
    artifact: Path,
    repo: Path,
    name: str,
    version: int,
    options: TritonOptions | Mapping[str, Any] | None = None,
    force: bool = False,
    *,
    lock_wait_s: float = LOCK_WAIT_S,
    on_wait: Callable[[str], None] | None = None,
) -> WriteResult:
    """Add (or with ``force`` replace) ``repo/name/version`` and regenerate the config.

    ``options`` is resolved by :func:`resolve_options`: pass only what should change (a
    mapping, as the CLI does) and a new version keeps the serving settings of the versions
    already there; pass a full :class:`TritonOptions` to set everything.

    Concurrent writers of one model take turns (:func:`model_lock`), and every decision (does
    the version exist, which versions and options to keep) is made from the repository as it is
    under the lock: a writer that read it before another's swap would otherwise rebuild the
    model without that writer's version.
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise BadInputError(
            f"--model {name!r}: use up to 200 letters, digits, '_', '-', '.' (starting with a letter or digit), "
            "nothing else (no spaces, slashes or newlines)"
        )
    if not 1 <= version <= MAX_VERSION:
        raise BadInputError(
            f"--version {version}: Triton versions are integers >= 1 and <= {MAX_VERSION} (int64; larger ones crash the server)"
        )
    if repo.exists() and not repo.is_dir():
        raise BadInputError(f"{repo}: --repo must be a folder")
    info = inspect_artifact(artifact)
    model_dir = repo / name
    refuse_inputs(model_dir, artifact_files(artifact), "model folder")
    if not repo.exists():
        _plan(info, model_dir, name, version, options, force)  # refuse bad options before creating the repository

    repo.mkdir(parents=True, exist_ok=True)  # only now: a refused write leaves no folder behind
    with model_lock(repo, name, lock_wait_s, on_wait):
        remove_stale_staging(model_dir, _staging_root(repo), on_wait)  # a writer killed by SIGKILL ran no cleanup
        plan = _plan(info, model_dir, name, version, options, force)
        spec = plan.spec
        with atomic_directory(model_dir, staging_root=_staging_root(repo)) as tmp:
            if model_dir.exists():
                _replicate(model_dir, tmp, skip={CONFIG, str(version)})
            files = _copy_artifact(info, spec, tmp / str(version))
            (tmp / CONFIG).write_text(plan.text)
            report = check_model(tmp, expected_name=name)
            if not report.ok:
                raise BadInputError(
                    f"{model_dir}: the written model fails offline validation: {'; '.join(report.problems)}"
                )
    final_files = [model_dir / f.relative_to(tmp) for f in files]
    report.path = model_dir
    return WriteResult(
        model_dir=model_dir,
        version=version,
        backend=spec.platform or spec.backend,
        files=[model_dir / CONFIG, *final_files],
        signature=plan.sig,
        versions=sorted(plan.versions),
        replaced=plan.replaced,
        report=report,
        options=plan.options,
    )
