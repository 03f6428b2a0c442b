"""Reading a VLM folder offline: its tokenizer as LeRobot loads it, and the host's tokenizer settings.

The reading half of :mod:`policy_export.language` (which writes the tokenizer file an artifact
carries), kept here in the declarations layer because a family's declaration reads the
tokenizer settings into the spec (``HostDecl.tokenizer``) and refuses a missing or unreadable
VLM folder before LeRobot builds anything. Plain Python at import; transformers and tokenizers
are imported when a folder is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from policy_export.errors import BadInputError

#: LeRobot's SmolVLA preprocessor pads on the right (``processor_smolvla.py``).
PADDING_SIDE = "right"


def _vlm_error(vlm: object, what: str) -> BadInputError:
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


def check_vlm_folder(vlm: object) -> Path:
    """The VLM folder exists and holds a readable SmolVLM config, tokenizer and processor (offline)."""
    if not isinstance(vlm, str) or not vlm:
        raise _vlm_error(vlm, "is not a folder name")
    folder = Path(vlm).expanduser()
    if not folder.is_dir():
        raise _vlm_error(vlm, "no such folder here (policy-export never downloads the VLM)")
    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise _vlm_error(vlm, f"its config.json is missing or unreadable ({type(exc).__name__})") from None
    if model_type != "smolvlm":
        raise _vlm_error(vlm, f"its config.json is a {model_type!r} model, not SmolVLM ('smolvlm')")
    load_vlm_tokenizer(folder)
    from transformers import AutoProcessor

    try:
        AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise _vlm_error(vlm, f"its processor does not load ({first})") from None
    return folder
