"""Gemma / SigLIP sizes for pi0 and pi0.5 other than LeRobot's two variants, for tests and benchmarks only.

LeRobot 0.6.1 builds pi0 / pi0.5 from ``get_gemma_config(variant)`` with only ``gemma_300m`` and
``gemma_2b``, a fixed SigLIP So400m vision tower and a fixed image projection of 2048 columns:
the smallest model it builds has 1.3B parameters, too big for unit tests. A checkpoint folder
written by ``policy-export demo --family pi05 --tiny`` carries :data:`SIZES_FILE`; while such a
checkpoint is built (by the demo, by policy-export's loader, and so by every LeRobot reference
the tests compare with), :func:`gemma_sizes` makes LeRobot's own classes take those sizes.
Everything else is LeRobot's code, unchanged. A real checkpoint has no such file, and then
nothing is patched.

``projection_dim`` is set to the VLM width: LeRobot hard-codes 2048 columns (gemma_2b's width),
so its ``gemma_300m`` PaliGemma variant cannot concatenate image and text tokens as it stands
(see BENCHMARKS.md); the real-size ``gemma_300m`` benchmark uses this file for that one field.

Plain Python at import; LeRobot is imported only when a sizes file is in use.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from policy_export.errors import BadInputError

#: The file a test-size checkpoint carries beside its config.json.
SIZES_FILE = "policy_export_gemma_sizes.json"
_GEMMA_KEYS = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
_VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size")


def read_sizes(root: Path) -> dict[str, Any] | None:
    """The sizes a checkpoint folder declares, or None for a real checkpoint (no file)."""
    path = root / SIZES_FILE
    if not path.is_file():
        return None
    try:
        sizes = json.loads(path.read_text())
        for variant in sizes.get("gemma", {}).values():
            for key in _GEMMA_KEYS:
                int(variant[key])
        for key in sizes.get("vision", {}):
            if key not in _VISION_KEYS:
                raise KeyError(key)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInputError(f"{path}: unreadable test-size file ({type(exc).__name__}: {exc}); delete it") from None
    return dict(sizes)


@contextlib.contextmanager
def gemma_sizes(sizes: dict[str, Any] | None) -> Iterator[None]:
    """LeRobot's pi0 / pi0.5 modules build with ``sizes`` inside this block (nothing changes for None)."""
    if not sizes:
        yield
        return
    import lerobot.policies.pi0.modeling_pi0 as pi0_modeling
    import lerobot.policies.pi05.modeling_pi05 as pi05_modeling

    gemma = {name: dict(v) for name, v in sizes.get("gemma", {}).items()}
    vision = dict(sizes.get("vision", {}))
    saved = []
    for module in (pi0_modeling, pi05_modeling):
        real_config, real_paligemma = module.get_gemma_config, module.PaliGemmaForConditionalGenerationWithPiGemma
        config_class = module.GemmaConfig

        def get_gemma_config(variant: str, _real: Any = real_config, _cls: Any = config_class) -> Any:
            if variant in gemma:
                return _cls(**{k: int(gemma[variant][k]) for k in _GEMMA_KEYS})
            return _real(variant)

        def paligemma(config: Any, _real: Any = real_paligemma) -> Any:
            for key, value in vision.items():
                setattr(config.vision_config, key, int(value))
            config.vision_config.projection_dim = int(config.text_config.hidden_size)
            return _real(config=config)

        saved.append((module, real_config, real_paligemma))
        module.get_gemma_config = get_gemma_config
        module.PaliGemmaForConditionalGenerationWithPiGemma = paligemma
    try:
        yield
    finally:
        for module, real_config, real_paligemma in saved:
            module.get_gemma_config = real_config
            module.PaliGemmaForConditionalGenerationWithPiGemma = real_paligemma
