"""The toolchain's side of host tokenization: the tokenizer file and settings an artifact carries.

The robot tokenizes the task with the ``tokenizers`` library alone
(:class:`policy_export.runtime.tokenizer.TaskTokenizer`). What it loads must tokenize exactly as
LeRobot's preprocessor does with ``transformers``' ``AutoTokenizer``: transformers configures
the backend tokenizer's post-processor (BOS/EOS) from ``tokenizer_config.json`` when it loads a
folder, so the VLM folder's own ``tokenizer.json`` is not enough. We write the backend
tokenizer *as transformers resolved it* (padding and truncation off: the host pads, and refuses
rather than truncates), and record the settings the host needs in the artifact's metadata.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from policy_export.declarations.vlm import (  # the reading half lives below, where declarations can use it
    PADDING_SIDE,
    _vlm_error,
    load_vlm_tokenizer,
    resolved_tokenizer_json,
    tokenizer_fields,
)

__all__ = [
    "PADDING_SIDE",
    "SIDECAR_SUFFIX",
    "load_vlm_tokenizer",
    "resolved_tokenizer_json",
    "tokenizer_fields",
    "write_tokenizer_json",
    "write_tokenizer_sidecar",
]

#: The tokenizer file beside an artifact; the robot side's ``runtime.tokenizer.SIDECAR_SUFFIX`` (same
#: value, a test holds them together: runtime may not import this module, which imports transformers).
SIDECAR_SUFFIX = ".tokenizer.json"


def write_tokenizer_json(tokenizer: Any, path: Path) -> str:
    """Write the resolved tokenizer to ``path`` (atomically); returns its sha256 for the metadata."""
    from policy_export.fsutil import atomic_output

    data = resolved_tokenizer_json(tokenizer).encode("utf-8")
    with atomic_output(path, force=True) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_tokenizer_sidecar(artifact: Path, vlm_model_name: str | Path, sha256: str | None = None) -> Path:
    """Write ``<artifact>.tokenizer.json`` (what the robot's host loads) from the checkpoint's VLM folder;
    refused when it would differ from the tokenizer the artifact's metadata recorded (``sha256``)."""
    path = Path(str(artifact) + SIDECAR_SUFFIX)
    data = resolved_tokenizer_json(load_vlm_tokenizer(vlm_model_name)).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise _vlm_error(
            vlm_model_name, "its tokenizer changed since the model's metadata was read; export again from this folder"
        )
    from policy_export.fsutil import atomic_output

    with atomic_output(path, force=True, what="tokenizer file") as tmp:
        tmp.write_bytes(data)
    return path
