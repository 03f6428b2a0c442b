"""Build a SmolVLA checkpoint and the VLM folder it reads, locally (random weights, plausible statistics).

SmolVLA reads its vision-language model through ``vlm_model_name`` (``AutoConfig`` and
``AutoProcessor.from_pretrained``), which normally names SmolVLM2-500M on the model hub. There
is no hub here, so this module writes that VLM as a local folder (its architecture as
transformers' ``SmolVLMConfig``, a byte-level BPE tokenizer made with the ``tokenizers`` library
that carries SmolVLM's special tokens, and a ``SmolVLMProcessor``) and points
``vlm_model_name`` at it, with ``load_vlm_weights=False`` so no weights are fetched. The policy
checkpoint is then saved exactly as training saves one.

:data:`DEFAULT_SMOLVLA` is LeRobot's default policy (SmolVLM2-500M's values, its first 16
text layers, an action expert of half the width, chunk 50, 10 flow steps, 512 px);
:data:`TINY_SMOLVLA` is the same architecture at a size the unit tests can export in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.demo import _dataset_stats, _features, rtc_config
from policy_export.fsutil import atomic_directory

#: SmolVLM's special tokens, as SmolVLM2's tokenizer names them (the processor and SmolVLA read
#: ``fake_image_token_id`` / ``global_image_token_id`` / ``image_token_id`` from the tokenizer).
SPECIAL_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "end_of_utterance_token": "<end_of_utterance>",
    "global_image_token": "<global-img>",
}
#: The chat-model tokens SmolLM2's vocabulary starts with (ids 0, 1, 2).
BASE_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

#: Words the local tokenizer learns its merges from: robot task instructions. Any text still
#: tokenizes (byte-level BPE has all 256 bytes), so unseen words just take more tokens.
_CORPUS = """pick up the red cube and place it in the bin
pick up the blue block and put it on the plate
push the t shaped block onto the target
open the drawer then close the drawer
fold the towel in half and move it to the left
grasp the cup by the handle and pour the water
stack the green cube on top of the yellow cube
insert the peg into the hole
move the arm to the home position
put the sponge in the sink and wipe the table
take the marker out of the box and hand it over
press the button and wait
""".splitlines()


@dataclass(frozen=True)
class VLMRecipe:
    """The VLM's architecture. Defaults: SmolVLM2-500M-Video-Instruct's published configuration."""

    text_hidden: int = 960
    text_intermediate: int = 2560
    text_layers: int = 32
    text_heads: int = 15
    text_kv_heads: int = 5
    head_dim: int = 64
    vocab_size: int = 49280
    rope_theta: float = 100000.0
    vision_hidden: int = 768
    vision_intermediate: int = 3072
    vision_layers: int = 12
    vision_heads: int = 12
    image_size: int = 512
    patch_size: int = 16
    scale_factor: int = 4
    #: Merges the local tokenizer learns (its vocabulary is 256 bytes + these + the special tokens).
    tokenizer_merges: int = 400


@dataclass(frozen=True)
class SmolVLARecipe:
    """What kind of SmolVLA checkpoint to build. Defaults: LeRobot's default policy at real size."""

    cameras: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {"top": (3, 480, 640)})
    state_dim: int = 6
    action_dim: int = 6
    chunk_size: int = 50
    n_action_steps: int = 50
    num_steps: int = 10
    num_vlm_layers: int = 16
    expert_width_multiplier: float = 0.5
    resize_imgs_with_padding: tuple[int, int] | None = (512, 512)
    tokenizer_max_length: int = 48
    vlm: VLMRecipe = field(default_factory=VLMRecipe)
    normalization: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )
    #: RTC settings saved in the checkpoint's ``rtc_config`` (None: none saved, LeRobot's defaults apply).
    rtc: dict[str, Any] | None = field(
        default_factory=lambda: {
            "execution_horizon": 10,
            "max_guidance_weight": 10.0,
            "prefix_attention_schedule": "LINEAR",
        }
    )
    #: As :attr:`policy_export.demo.CheckpointRecipe.value_range` (None: joint-like statistics).
    value_range: tuple[float, float] | None = None
    #: Any other ``SmolVLAConfig`` field (``attention_mode``, ``num_expert_layers``, ``self_attn_every_n_layers``...).
    config_overrides: dict[str, object] = field(default_factory=dict)
    seed: int = 0


DEFAULT_SMOLVLA = SmolVLARecipe()

#: The same architecture at toy size: 2 cameras of different shapes (so resize-with-pad really
#: pads), cross- and self-attention expert layers, chunk 10, 3 flow steps.
TINY_SMOLVLA = SmolVLARecipe(
    cameras={"top": (3, 48, 64), "wrist": (3, 40, 40)},
    state_dim=5,
    action_dim=4,
    chunk_size=10,
    n_action_steps=10,
    num_steps=3,
    num_vlm_layers=4,
    expert_width_multiplier=0.5,
    resize_imgs_with_padding=(32, 32),
    tokenizer_max_length=16,
    vlm=VLMRecipe(
        text_hidden=64,
        text_intermediate=128,
        text_layers=6,
        text_heads=4,
        text_kv_heads=2,
        head_dim=16,
        vocab_size=700,
        vision_hidden=32,
        vision_intermediate=64,
        vision_layers=2,
        vision_heads=2,
        image_size=32,
        patch_size=8,
        scale_factor=2,
        tokenizer_merges=300,
    ),
    rtc={"execution_horizon": 6, "max_guidance_weight": 5.0, "prefix_attention_schedule": "LINEAR"},
    seed=3,
)


def tiny_recipe(**changes: Any) -> SmolVLARecipe:
    """:data:`TINY_SMOLVLA` with some fields changed (tests' variants)."""
    return replace(TINY_SMOLVLA, **changes)


def _tokenizer(merges: int) -> Any:
    """A byte-level BPE (as SmolLM2's) trained on :data:`_CORPUS`, with SmolVLM's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [*BASE_TOKENS, *SPECIAL_TOKENS.values()]
    trainer = trainers.BpeTrainer(
        vocab_size=256 + merges + len(specials),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=8192,
        extra_special_tokens=dict(SPECIAL_TOKENS),
    )


def build_vlm_folder(out_dir: str | Path, vlm: VLMRecipe | None = None) -> Path:
    """Write the VLM folder ``vlm_model_name`` points at: config, tokenizer and processor (no weights:
    SmolVLA builds the VLM from its config with ``load_vlm_weights=False``)."""
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    vlm = vlm or VLMRecipe()
    out = Path(out_dir)
    tokenizer = _tokenizer(vlm.tokenizer_merges)
    if len(tokenizer) > vlm.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than vocab_size {vlm.vocab_size}")
    fields: dict[str, Any] = dict(
        text_config={
            "model_type": "llama",
            "hidden_size": vlm.text_hidden,
            "intermediate_size": vlm.text_intermediate,
            "num_hidden_layers": vlm.text_layers,
            "num_attention_heads": vlm.text_heads,
            "num_key_value_heads": vlm.text_kv_heads,
            "head_dim": vlm.head_dim,
            "vocab_size": vlm.vocab_size,
            "rope_theta": vlm.rope_theta,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 8192,
            "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": False,
        },
        vision_config={
            "hidden_size": vlm.vision_hidden,
            "intermediate_size": vlm.vision_intermediate,
            "num_hidden_layers": vlm.vision_layers,
            "num_attention_heads": vlm.vision_heads,
            "image_size": vlm.image_size,
            "patch_size": vlm.patch_size,
        },
        scale_factor=vlm.scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["image_token"]),
        pad_token_id=tokenizer.pad_token_id,
    )
    config = SmolVLMConfig(**fields)
    image_processor = SmolVLMImageProcessor(
        do_image_splitting=True,
        max_image_size={"longest_edge": vlm.image_size},
        size={"longest_edge": 4 * vlm.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    seq_len = (vlm.image_size // vlm.patch_size) ** 2 // vlm.scale_factor**2
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=seq_len,
    )
    with atomic_directory(out) as tmp:
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out


def smolvla_config(recipe: SmolVLARecipe, vlm_dir: Path) -> Any:
    """LeRobot's ``SmolVLAConfig`` for ``recipe`` reading its VLM from ``vlm_dir``."""
    from lerobot.configs.types import NormalizationMode
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    input_features, output_features = _features(recipe)  # type: ignore[arg-type]  # same fields as the ACT recipe's
    return SmolVLAConfig(
        input_features=input_features,
        output_features=output_features,
        chunk_size=recipe.chunk_size,
        n_action_steps=recipe.n_action_steps,
        num_steps=recipe.num_steps,
        num_vlm_layers=recipe.num_vlm_layers,
        expert_width_multiplier=recipe.expert_width_multiplier,
        resize_imgs_with_padding=recipe.resize_imgs_with_padding,
        tokenizer_max_length=recipe.tokenizer_max_length,
        normalization_mapping={k: NormalizationMode(v) for k, v in recipe.normalization.items()},
        vlm_model_name=str(vlm_dir.resolve()),
        load_vlm_weights=False,
        rtc_config=rtc_config(recipe.rtc),
        device="cpu",
        **recipe.config_overrides,
    )


def _quiet_vlm_build() -> Any:
    """LeRobot prints "Reducing the number of VLM layers..." while building; keep the CLI readable."""
    import contextlib
    import io

    return contextlib.redirect_stdout(io.StringIO())


def build_smolvla_checkpoint(
    out_dir: str | Path, recipe: SmolVLARecipe | None = None, vlm_dir: str | Path | None = None
) -> Path:
    """Write a SmolVLA ``pretrained_model`` folder and its VLM folder (``<out_dir>-vlm`` beside it,
    rewritten each time; or ``vlm_dir``, written only when it holds no VLM yet, so several
    checkpoints can share one) and return the checkpoint's path."""
    import torch
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    recipe = recipe or DEFAULT_SMOLVLA
    out = Path(out_dir)
    vlm_path = Path(vlm_dir) if vlm_dir is not None else out.with_name(out.name + "-vlm")
    if vlm_dir is None or not (vlm_path / "config.json").is_file():
        build_vlm_folder(vlm_path, recipe.vlm)
    rng = np.random.default_rng(recipe.seed)
    torch.manual_seed(recipe.seed)
    cfg = smolvla_config(recipe, vlm_path)
    with _quiet_vlm_build():
        policy = SmolVLAPolicy(cfg)
    _perturb_norms(policy, rng)
    stats = _dataset_stats(rng, recipe)  # type: ignore[arg-type]  # same fields as the ACT recipe's
    pre, post = make_smolvla_pre_post_processors(cfg, dataset_stats=stats)
    with atomic_directory(out) as tmp:
        policy.save_pretrained(tmp)
        pre.save_pretrained(tmp)
        post.save_pretrained(tmp)
        saved = json.loads((tmp / "config.json").read_text())
        if saved.get("vlm_model_name") != str(vlm_path.resolve()):
            raise RuntimeError(f"config.json names VLM {saved.get('vlm_model_name')!r}, expected {vlm_path}")
    return out


def _perturb_norms(policy: Any, rng: np.random.Generator) -> None:
    """Random init leaves every RMSNorm / LayerNorm weight at one and bias at zero; give them
    trained-looking values so an export that dropped or misplaced a norm would show in parity."""
    import torch

    with torch.no_grad():
        for module in policy.modules():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor) or weight.ndim != 1:
                continue
            name = type(module).__name__
            if "RMSNorm" in name or isinstance(module, torch.nn.LayerNorm):
                n = weight.shape[0]
                weight.copy_(torch.from_numpy(rng.uniform(0.7, 1.3, n).astype(np.float32)))
                bias = getattr(module, "bias", None)
                if isinstance(bias, torch.Tensor):
                    bias.copy_(torch.from_numpy(rng.normal(0, 0.05, n).astype(np.float32)))
