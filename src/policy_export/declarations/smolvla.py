"""SmolVLA's declaration: state + cameras + the tokenized task + noise + real-time chunking inputs.

The host tokenizes the task (``HostDecl.tokenizer``, settings written by
:mod:`policy_export.declarations.vlm`), draws the noise, and keeps LeRobot's RTC queue
(``HostDecl.rtc``: the execution horizon, schedule and guidance weight the core bakes in);
an action queue of ``n_action_steps`` without RTC.

The VLM is read through ``vlm_model_name``: it must be a local folder (nothing is downloaded),
so a missing or unreadable folder, tokenizer or processor is refused here, in one line naming
``vlm_model_name``, before LeRobot builds anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from policy_export.declarations.base import Declaration, Declared, FieldRule
from policy_export.declarations.vlm import check_vlm_folder, load_vlm_tokenizer, tokenizer_fields
from policy_export.errors import BadInputError
from policy_export.spec import ACTION_DIM, BATCH, CHUNK, HostDecl, PolicySpec, Role, TensorDecl, observation_inputs

#: The attention modes the exported core reproduces (LeRobot's default is cross_attn).
ATTENTION_MODES = ("cross_attn", "self_attn")
SCHEDULES = ("ZEROS", "ONES", "LINEAR", "EXP")
LANG_TOKENS, LANG_MASK, NOISE = "lang_tokens", "lang_mask", "noise"
RTC_PREV_CHUNK, RTC_PREV_LEN, RTC_DELAY = "rtc_prev_chunk", "rtc_prev_len", "rtc_delay"
#: LeRobot's RTCConfig defaults, used when a checkpoint saved no rtc_config (LeRobot's rollout then
#: takes its RTC settings from its command line, whose defaults these are).
RTC_DEFAULTS: dict[str, Any] = {"execution_horizon": 10, "max_guidance_weight": 10.0, "prefix_attention_schedule": "LINEAR"}


def rtc_decl(cfg: Any) -> dict[str, Any]:
    """The checkpoint's RTC settings (or LeRobot's defaults when it saved none), as the host reads them."""
    rtc = getattr(cfg, "rtc_config", None)
    if rtc is None:
        return {**RTC_DEFAULTS, "source": "lerobot-defaults"}
    schedule = rtc.prefix_attention_schedule
    return {
        "execution_horizon": int(rtc.execution_horizon),
        "max_guidance_weight": float(rtc.max_guidance_weight),
        "prefix_attention_schedule": str(getattr(schedule, "value", schedule)),
        "source": "checkpoint",
    }


class SmolVLADeclaration(Declaration):
    policy_type = "smolvla"
    fields: ClassVar[dict[str, FieldRule]] = {
        "num_steps": FieldRule("int", lo=1, hi=100_000),
        "max_state_dim": FieldRule("int", lo=1, hi=1 << 16),
        "max_action_dim": FieldRule("int", lo=1, hi=1 << 16),
        "image_size": FieldRule("int_list", lo=1, hi=1 << 14, max_len=2),
        "attention_mode": FieldRule("str", choices=ATTENTION_MODES),
        "num_vlm_layers": FieldRule("int", lo=1, hi=4096),
        "tokenizer_max_length": FieldRule("int", lo=1, hi=1 << 16),
    }

    def check_config(self, raw: dict[str, Any], config_path: Path) -> None:
        mode = raw.get("attention_mode", "cross_attn")
        if mode not in ATTENTION_MODES:
            raise BadInputError(
                f"{config_path}: attention_mode {mode!r} is not supported; policy-export exports {', '.join(ATTENTION_MODES)}"
            )
        refusals = {
            "empty_cameras": "export a policy whose cameras are all real inputs",
            "add_image_special_tokens": "export a policy trained without image special tokens",
            "adapt_to_pi_aloha": "export a policy trained without the Aloha conversion",
            "use_delta_joint_actions_aloha": "export a policy trained without it",
        }
        for key, fix in refusals.items():
            if raw.get(key):
                raise BadInputError(f"{config_path}: {key} {raw[key]!r} is not supported; {fix}")
        if raw.get("use_cache") is False:
            raise BadInputError(f"{config_path}: use_cache false is not supported (LeRobot's SmolVLA needs its cache)")
        if isinstance(raw.get("prefix_length"), int) and raw["prefix_length"] > 0:
            raise BadInputError(f"{config_path}: prefix_length {raw['prefix_length']} is not supported; use -1")
        vlm_layers, expert_layers = raw.get("num_vlm_layers", 16), raw.get("num_expert_layers", -1)
        every = raw.get("self_attn_every_n_layers", 2)
        if isinstance(vlm_layers, int) and isinstance(expert_layers, int) and expert_layers > 0 and vlm_layers > 0:
            multiple = vlm_layers // expert_layers if vlm_layers % expert_layers == 0 else 0
            selfless = [
                i
                for i in range(vlm_layers)
                if multiple and i % multiple and ("cross" not in mode or (isinstance(every, int) and every > 0 and i % every == 0))
            ]
            if not multiple or selfless:
                raise BadInputError(
                    f"{config_path}: expert layout not supported: num_expert_layers {expert_layers} with "
                    f"num_vlm_layers {vlm_layers} and self_attn_every_n_layers {every} "
                    "(each self-attention layer needs an expert layer; LeRobot cannot run it either)"
                )
        resize = raw.get("resize_imgs_with_padding")
        if resize is not None and (not isinstance(resize, list) or len(resize) != 2 or resize[0] != resize[1]):
            raise BadInputError(
                f"{config_path}: resize_imgs_with_padding {resize!r} is not supported; SmolVLM's connector needs a "
                "square size such as [512, 512]"
            )
        check_vlm_folder(raw.get("vlm_model_name"))

    def declare(self, cfg: Any, spec: PolicySpec, config_path: Path) -> Declared:
        resize = cfg.resize_imgs_with_padding
        size = [int(resize[1]), int(resize[0])] if resize is not None else list(spec.cameras[0].shape[1:])
        length = int(cfg.tokenizer_max_length)
        tokenizer = load_vlm_tokenizer(cfg.vlm_model_name)
        vocab = json.loads((Path(cfg.vlm_model_name) / "config.json").read_text())["text_config"]["vocab_size"]
        inputs = (
            *observation_inputs(spec.state_dim, spec.cameras, spec.state_key),
            TensorDecl(LANG_TOKENS, Role.LANG_TOKENS, (BATCH, "L"), dtype="int64", units="token ids"),
            TensorDecl(LANG_MASK, Role.LANG_MASK, (BATCH, "L"), dtype="bool"),
            TensorDecl(NOISE, Role.NOISE, (BATCH, CHUNK, "max_action_dim"), units="standard normal"),
            TensorDecl(RTC_PREV_CHUNK, Role.RTC_PREV_CHUNK, (BATCH, CHUNK, ACTION_DIM), units="robot"),
            TensorDecl(RTC_PREV_LEN, Role.RTC_PREV_LEN, (BATCH,), dtype="int64", units="rows"),
            TensorDecl(RTC_DELAY, Role.RTC_DELAY, (BATCH,), dtype="int64", units="control steps"),
        )
        return Declared(
            chunk_size=int(cfg.chunk_size),
            n_action_steps=int(cfg.n_action_steps),
            inputs=inputs,
            dims={"L": length, "max_action_dim": int(cfg.max_action_dim), "vocab": int(min(vocab, len(tokenizer)))},
            host=HostDecl(tokenizer=tokenizer_fields(cfg, tokenizer, length), rtc=rtc_decl(cfg)),
            family={
                "num_steps": int(cfg.num_steps),
                "max_state_dim": int(cfg.max_state_dim),
                "max_action_dim": int(cfg.max_action_dim),
                "image_size": size,
                "attention_mode": str(cfg.attention_mode),
                "num_vlm_layers": int(cfg.num_vlm_layers),
                "tokenizer_max_length": length,
            },
        )

    def describe(self, spec: PolicySpec) -> list[tuple[str, str]]:
        f, rtc = spec.family, spec.host.rtc or {}
        return [
            ("flow steps", str(f["num_steps"])),
            ("vision input", "x".join(map(str, f["image_size"])) + " (resize with pad in the graph)"),
            ("VLM layers / attention", f"{f['num_vlm_layers']} / {f['attention_mode']}"),
            ("task tokens", f"<= {f['tokenizer_max_length']}"),
            (
                "RTC",
                f"horizon {rtc.get('execution_horizon')}, {rtc.get('prefix_attention_schedule')}, "
                f"max guidance {rtc.get('max_guidance_weight')} ({rtc.get('source')})",
            ),
        ]
