"""Versions of the libraries an artifact was built with, recorded in its metadata."""

from __future__ import annotations

from importlib import metadata


def library_versions(*names: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("policy-export", "torch", "lerobot", "onnx", "onnxruntime", *names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
