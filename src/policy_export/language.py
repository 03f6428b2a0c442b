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

from policy_export.errors import BadInputError

#: The tokenizer file beside an artifact; the robot side's ``runtime.tokenizer.SIDECAR_SUFFIX`` (same
#: value, a test holds them together: runtime may not import this module, which imports transformers).
SIDECAR_SUFFIX = ".tokenizer.json"
#: LeRobot's SmolVLA preprocessor pads on the right (``processor_smolvla.py``).
PADDING_SIDE = "right"


def _vlm_error(vlm: str | Path, what: str) -> BadInputError:
    return BadInputError(
        f"vlm_model_name {str(vlm)!r}: {what}; point vlm_model_name in config.json at a local folder holding the "
        "VLM's config.json, tokenizer (tokenizer.json + tokenizer_config.json) and processor files"
    )


def load_vlm_tokenizer(vlm: str | Path) -> Any:  # transformers' tokenizer (untyped here)
    """``AutoTokenizer.from_pretrained(vlm)`` as LeRobot's ``TokenizerProcessorStep`` loads it, offline."""
    folder = Path(vlm)
    if not folder.is_dir():
        raise _vlm_error(vlm, "no such folder (policy-export never downloads it)")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise _vlm_error(vlm, "the folder has no tokenizer.json / tokenizer_config.json")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        text = str(exc).strip()
        raise _vlm_error(
            vlm, f"its tokenizer does not load ({text.splitlines()[0] if text else type(exc).__name__})"
        ) from None


def resolved_tokenizer_json(tokenizer: Any) -> str:
    """The backend tokenizer transformers calls, with padding and truncation off, as JSON text."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise BadInputError(
            f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer; the robot side needs one"
        )
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    copy.no_truncation()
    return str(copy.to_str())


def tokenizer_fields(
    cfg: Any, tokenizer: Any, lang_length: int | None = None, sha256: str | None = None
) -> dict[str, Any]:
    """The host declaration's ``tokenizer`` entry (what :class:`~policy_export.runtime.tokenizer.TokenizerSettings`
    reads). ``cfg``: LeRobot's SmolVLA config; ``lang_length``: the core's fixed token axis (None: dynamic);
    ``sha256``: of the tokenizer file (default: of what :func:`write_tokenizer_json` writes for ``tokenizer``)."""
    if sha256 is None:
        sha256 = hashlib.sha256(resolved_tokenizer_json(tokenizer).encode("utf-8")).hexdigest()
    pad = tokenizer.pad_token_id
    if pad is None:
        raise _vlm_error(cfg.vlm_model_name, "its tokenizer has no pad token (tokenizer_config.json: pad_token)")
    return {
        "max_length": int(cfg.tokenizer_max_length),
        "padding": str(cfg.pad_language_to),
        "padding_side": PADDING_SIDE,
        "pad_token_id": int(pad),
        "length": lang_length,
        "sha256": sha256,
    }


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
