"""pi0 and pi0.5's declarations: SmolVLA's signature (state, cameras, the tokenized prompt, noise, RTC inputs).

Both read the PaliGemma tokenizer that their saved preprocessor names (``TokenizerProcessorStep``'s
``tokenizer_name``, by default the hub id ``google/paligemma-3b-pt-224``): a local folder, or a
name already in the local Hugging Face cache. Nothing is downloaded; a tokenizer that cannot be
found offline is refused in one line naming the processor field and the fix.

The prompt differs: pi0's preprocessor appends ``"\\n"`` to the task (as SmolVLA's); pi0.5's writes
``Task: <task>, State: <256-bin state>;\\nAction: `` (the state normalized by the preprocessor's own
statistics, then discretized), so pi0.5's host settings carry that template and the state's
normalization (``HostDecl.tokenizer["prompt"]``), and its host re-tokenizes at every chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

from policy_export.declarations.base import Declaration, Declared, FieldRule
from policy_export.declarations.pi_sizes import gemma_sizes, read_sizes
from policy_export.declarations.smolvla import (
    LANG_MASK,
    LANG_TOKENS,
    NOISE,
    RTC_DELAY,
    RTC_PREV_CHUNK,
    RTC_PREV_LEN,
    rtc_decl,
)
from policy_export.declarations.vlm import resolved_tokenizer_json
from policy_export.errors import BadInputError
from policy_export.spec import ACTION_DIM, BATCH, CHUNK, HostDecl, PolicySpec, Role, TensorDecl, observation_inputs

PREPROCESSOR = "policy_preprocessor.json"
TOKENIZER_STEP = "tokenizer_processor"
VARIANTS = ("gemma_300m", "gemma_2b")
#: pi0.5's prompt (``Pi05PrepareStateTokenizerProcessorStep``), and its state discretization.
PI05_TEMPLATE = "Task: {task}, State: {state};\nAction: "
PI05_STATE_BINS = 256

#: Parameters (stored in model.safetensors, used by sampling = without the two 257k-row LM heads) of
#: LeRobot 0.6.1's pi0 / pi0.5 per (paligemma_variant, action_expert_variant), counted on the meta device.
PARAMETERS: dict[tuple[str, str, str], tuple[int, int]] = {
    ("pi05", "gemma_2b", "gemma_300m"): (4_143_404_816, 3_353_433_872),
    ("pi05", "gemma_300m", "gemma_300m"): (1_945_157_392, 1_418_510_096),
    ("pi05", "gemma_2b", "gemma_2b"): (6_432_759_568, 5_379_464_976),
    ("pi05", "gemma_300m", "gemma_2b"): (4_234_512_144, 3_444_541_200),
    ("pi0", "gemma_2b", "gemma_300m"): (4_028_019_472, 3_238_048_528),
    ("pi0", "gemma_300m", "gemma_300m"): (1_829_772_048, 1_303_124_752),
    ("pi0", "gemma_2b", "gemma_2b"): (5_971_302_160, 4_918_007_568),
    ("pi0", "gemma_300m", "gemma_2b"): (3_773_054_736, 2_983_083_792),
}
#: Measured on the gemma_300m + gemma_300m pi0.5 (1.945B parameters stored; BENCHMARKS.md): building it
#: peaked at 9.09 GiB resident, and one process that loaded it as every command does, ran LeRobot eager
#: and exported it (``export_onnx``, weights to external data) peaked at 15.45 GiB (``benchmarks/pi05.py``
#: under ``/usr/bin/time -v``). Both scale with the stored parameters.
MEASURED_LOAD_GIB_PER_BPARAM = 9.09 / 1.945
MEASURED_EXPORT_GIB_PER_BPARAM = 15.45 / 1.945


def memory_needed_gib(kind: str, vlm: str, expert: str) -> tuple[float, float]:
    """(to load, to export) in GiB: the peaks measured on the gemma_300m variant, scaled by stored parameters."""
    stored = PARAMETERS[(kind, vlm, expert)][0] / 1e9
    return MEASURED_LOAD_GIB_PER_BPARAM * stored, MEASURED_EXPORT_GIB_PER_BPARAM * stored


def machine_memory_gib() -> float:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) / 2**30
    except (ValueError, OSError):
        return float("inf")


def tokenizer_name(root: Path) -> tuple[str, int]:
    """The saved preprocessor's ``tokenizer_name`` and the step's index (for the one-line fixes)."""
    path = root / PREPROCESSOR
    try:
        steps = json.loads(path.read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path}: unreadable processor ({type(exc).__name__}); re-save it with LeRobot") from None
    for i, step in enumerate(steps):
        if isinstance(step, dict) and step.get("registry_name") == TOKENIZER_STEP:
            name = (step.get("config") or {}).get("tokenizer_name")
            if isinstance(name, str) and name:
                return name, i
            raise BadInputError(
                f"{path}: steps[{i}].config has no tokenizer_name; set it to the PaliGemma tokenizer's folder"
            )
    raise BadInputError(f"{path}: no {TOKENIZER_STEP} step; pi0 / pi0.5 tokenize their prompt there")


def load_tokenizer(root: Path) -> Any:
    """``AutoTokenizer`` as LeRobot's ``TokenizerProcessorStep`` loads it, but offline only."""
    name, index = tokenizer_name(root)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise BadInputError(
            f"{root / PREPROCESSOR}: steps[{index}].config.tokenizer_name {name!r} cannot be loaded offline ({first}); "
            "set it to a local folder holding the PaliGemma tokenizer, or put that tokenizer in the Hugging Face cache "
            "(policy-export never downloads)"
        ) from None


class PiDeclaration(Declaration):
    """pi0 (``kind`` "pi0") or pi0.5 ("pi05")."""

    fields: ClassVar[dict[str, FieldRule]] = {
        "num_steps": FieldRule("int", lo=1, hi=100_000),
        "max_state_dim": FieldRule("int", lo=1, hi=1 << 16),
        "max_action_dim": FieldRule("int", lo=1, hi=1 << 16),
        "image_size": FieldRule("int_list", lo=1, hi=1 << 14, max_len=2),
        "paligemma_variant": FieldRule("str", choices=VARIANTS),
        "action_expert_variant": FieldRule("str", choices=VARIANTS),
        "tokenizer_max_length": FieldRule("int", lo=1, hi=1 << 16),
        "test_sizes": FieldRule("bool"),
    }

    def __init__(self, kind: str) -> None:
        self.policy_type = kind

    def check_config(self, raw: dict[str, Any], config_path: Path) -> None:
        for key in ("paligemma_variant", "action_expert_variant"):
            value = raw.get(key, "gemma_2b" if key == "paligemma_variant" else "gemma_300m")
            if value not in VARIANTS:
                raise BadInputError(
                    f"{config_path}: {key} {value!r} is not supported; use one of {', '.join(VARIANTS)}"
                )
        refusals = {
            "empty_cameras": "export a policy whose cameras are all real inputs",
            "use_relative_actions": "export a policy trained with absolute actions",
            "compile_model": "set compile_model false (the export traces the eager model)",
        }
        for key, fix in refusals.items():
            if raw.get(key):
                raise BadInputError(f"{config_path}: {key} {raw[key]!r} is not supported; {fix}")
        if raw.get("dtype", "float32") != "float32":
            raise BadInputError(
                f"{config_path}: dtype {raw.get('dtype')!r} is not supported; set dtype to float32 (the export is fp32)"
            )
        resolution = raw.get("image_resolution", [224, 224])
        if not isinstance(resolution, list) or len(resolution) != 2 or resolution[0] != resolution[1]:
            raise BadInputError(
                f"{config_path}: image_resolution {resolution!r} is not supported; PaliGemma needs a square size"
            )
        sizes = read_sizes(config_path.parent)
        vlm = raw.get("paligemma_variant", "gemma_2b")
        expert = raw.get("action_expert_variant", "gemma_300m")
        if sizes is None and vlm == "gemma_300m":
            raise BadInputError(
                f"{config_path}: paligemma_variant 'gemma_300m' is not supported: LeRobot 0.6.1 projects images to "
                "2048 columns (gemma_2b's width), which a 1024-wide gemma_300m cannot take, so its own "
                "predict_action_chunk fails; use gemma_2b"
            )
        if sizes is None:
            load, export = memory_needed_gib(self.policy_type, vlm, expert)
            have = machine_memory_gib()
            if have < export:
                stored = PARAMETERS[(self.policy_type, vlm, expert)][0] / 1e9
                raise BadInputError(
                    f"{config_path}: {self.policy_type} {vlm} + {expert} ({stored:.1f}B parameters) needs about "
                    f"{export:.0f} GiB of memory to export ({load:.0f} GiB to load; measured on the gemma_300m variant, "
                    f"scaled by parameters) and this machine has {have:.0f} GiB; export it on a larger machine"
                )
        load_tokenizer(config_path.parent)

    def building(self, root: Path) -> AbstractContextManager[None]:
        sizes = read_sizes(root)
        return gemma_sizes(sizes) if sizes else contextlib.nullcontext()

    def _prompt(self, config_path: Path, spec: PolicySpec) -> dict[str, Any]:
        if self.policy_type != "pi05":
            return {"newline": True}
        # the state's normalization, from the preprocessor's own statistics (quantiles by default)
        from policy_export.declarations.pi_state import state_normalization

        return {
            "newline": False,
            "template": PI05_TEMPLATE,
            "state_bins": PI05_STATE_BINS,
            "state": state_normalization(config_path.parent, spec.state_key, spec.state_dim),
        }

    def declare(self, cfg: Any, spec: PolicySpec, config_path: Path) -> Declared:
        length = int(cfg.tokenizer_max_length)
        tokenizer = load_tokenizer(config_path.parent)
        if tokenizer.pad_token_id is None:
            raise BadInputError(f"{config_path.parent / PREPROCESSOR}: the tokenizer has no pad token; use PaliGemma's")
        inputs = (
            *observation_inputs(spec.state_dim, spec.cameras, spec.state_key),
            TensorDecl(LANG_TOKENS, Role.LANG_TOKENS, (BATCH, "L"), dtype="int64", units="token ids"),
            TensorDecl(LANG_MASK, Role.LANG_MASK, (BATCH, "L"), dtype="bool"),
            TensorDecl(NOISE, Role.NOISE, (BATCH, CHUNK, "max_action_dim"), units="standard normal"),
            TensorDecl(RTC_PREV_CHUNK, Role.RTC_PREV_CHUNK, (BATCH, CHUNK, ACTION_DIM), units="robot"),
            TensorDecl(RTC_PREV_LEN, Role.RTC_PREV_LEN, (BATCH,), dtype="int64", units="rows"),
            TensorDecl(RTC_DELAY, Role.RTC_DELAY, (BATCH,), dtype="int64", units="control steps"),
        )
        sha = hashlib.sha256(resolved_tokenizer_json(tokenizer).encode("utf-8")).hexdigest()
        host_tokenizer = {
            "max_length": length,
            "padding": "max_length",
            "padding_side": "right",
            "pad_token_id": int(tokenizer.pad_token_id),
            "length": length,
            "sha256": sha,
            "prompt": self._prompt(config_path, spec),
        }
        resolution = cfg.image_resolution
        return Declared(
            chunk_size=int(cfg.chunk_size),
            n_action_steps=int(cfg.n_action_steps),
            inputs=inputs,
            dims={"L": length, "max_action_dim": int(cfg.max_action_dim), "vocab": len(tokenizer)},
            host=HostDecl(tokenizer=host_tokenizer, rtc=rtc_decl(cfg)),
            family={
                "num_steps": int(cfg.num_inference_steps),
                "max_state_dim": int(cfg.max_state_dim),
                "max_action_dim": int(cfg.max_action_dim),
                "image_size": [int(resolution[0]), int(resolution[1])],
                "paligemma_variant": str(cfg.paligemma_variant),
                "action_expert_variant": str(cfg.action_expert_variant),
                "tokenizer_max_length": length,
                "test_sizes": read_sizes(config_path.parent) is not None,
            },
        )

    def describe(self, spec: PolicySpec) -> list[tuple[str, str]]:
        f, rtc = spec.family, spec.host.rtc or {}
        sizes = " (test sizes)" if f.get("test_sizes") else ""
        state = "in the prompt, 256 bins (host)" if self.policy_type == "pi05" else "one expert token"
        return [
            ("flow steps", str(f["num_steps"])),
            ("PaliGemma / expert", f"{f['paligemma_variant']} / {f['action_expert_variant']}{sizes}"),
            ("vision input", "x".join(map(str, f["image_size"])) + " (resize with pad in the graph)"),
            ("state", state),
            ("prompt tokens", f"{f['tokenizer_max_length']} (padded)"),
            (
                "RTC",
                f"horizon {rtc.get('execution_horizon')}, {rtc.get('prefix_attention_schedule')}, "
                f"max guidance {rtc.get('max_guidance_weight')} ({rtc.get('source')})",
            ),
        ]
