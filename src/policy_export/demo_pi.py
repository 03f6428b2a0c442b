"""Build pi0 / pi0.5 checkpoints and the PaliGemma tokenizer they read, locally (random weights).

LeRobot's pi0 / pi0.5 processors name the tokenizer by hub id (``google/paligemma-3b-pt-224``),
which is not reachable here. This module writes a local tokenizer folder with PaliGemma's
special-token interface (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<bos>`` prepended,
SentencePiece-style ``▁`` word boundaries, an ``<image>`` token), built with the ``tokenizers``
library, and saves the checkpoint's preprocessor pointing at that folder. The models are
LeRobot's own classes built from transformers' config classes (nothing is downloaded).

:data:`TINY_PI05` / :data:`TINY_PI0` use test sizes (:mod:`policy_export.declarations.pi_sizes`:
the checkpoint carries the sizes file, so policy-export and LeRobot rebuild it at those sizes);
:data:`GEMMA_300M_PI05` is the ``gemma_300m`` + ``gemma_300m`` variant at its real size (SigLIP
So400m, 257k-token embedding), with only the image projection's width patched (LeRobot
hard-codes 2048 columns, which a 1024-wide VLM cannot take).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.declarations.pi_sizes import SIZES_FILE, gemma_sizes
from policy_export.demo import _features, _plausible_stats, rtc_config
from policy_export.fsutil import atomic_directory

#: PaliGemma's special tokens at their ids (Gemma's vocabulary starts with them).
BASE_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]
IMAGE_TOKEN = "<image>"
_CORPUS = """Task: pick up the red cube and place it in the bin, State: 12 255 0 128 64 7;
Action: push the t shaped block onto the target
open the drawer then close the drawer
fold the towel in half and move it to the left
grasp the cup by the handle and pour the water
stack the green cube on top of the yellow cube
insert the peg into the hole, move the arm to the home position
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 50 64 99 100 127 128 200 250 255
""".splitlines()

TINY_SIZES: dict[str, Any] = {
    "gemma": {
        # the VLM (paligemma_variant "gemma_2b") and the expert ("gemma_300m") at different widths
        "gemma_2b": {"width": 64, "depth": 3, "mlp_dim": 128, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16},
        "gemma_300m": {"width": 32, "depth": 3, "mlp_dim": 64, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16},
    },
    "vision": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
    },
}
#: Real sizes; only the image projection's width follows the VLM (see the module docstring).
REAL_SIZES: dict[str, Any] = {"gemma": {}, "vision": {}}


@dataclass(frozen=True)
class PiRecipe:
    """What kind of pi0 / pi0.5 checkpoint to build. Defaults: LeRobot's default pi0.5 (3.3B)."""

    family: str = "pi05"
    cameras: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {"top": (3, 224, 224)})
    state_dim: int = 6
    action_dim: int = 6
    chunk_size: int = 50
    n_action_steps: int = 50
    num_steps: int = 10
    max_state_dim: int = 32
    max_action_dim: int = 32
    image_resolution: tuple[int, int] = (224, 224)
    tokenizer_max_length: int = 200
    paligemma_variant: str = "gemma_2b"
    action_expert_variant: str = "gemma_300m"
    #: Test sizes written into the checkpoint (None: LeRobot's variants unchanged).
    sizes: dict[str, Any] | None = None
    rtc: dict[str, Any] | None = field(
        default_factory=lambda: {
            "execution_horizon": 10,
            "max_guidance_weight": 10.0,
            "prefix_attention_schedule": "LINEAR",
        }
    )
    tokenizer_merges: int = 300
    seed: int = 0


DEFAULT_PI05 = PiRecipe()
GEMMA_300M_PI05 = PiRecipe(paligemma_variant="gemma_300m", sizes=REAL_SIZES)
TINY_PI05 = PiRecipe(
    cameras={"top": (3, 48, 64), "wrist": (3, 32, 32)},
    state_dim=5,
    action_dim=4,
    chunk_size=10,
    n_action_steps=10,
    num_steps=3,
    max_state_dim=8,
    max_action_dim=6,
    image_resolution=(32, 32),
    tokenizer_max_length=48,
    sizes=TINY_SIZES,
    rtc={"execution_horizon": 6, "max_guidance_weight": 5.0, "prefix_attention_schedule": "LINEAR"},
    seed=5,
)
TINY_PI0 = replace(TINY_PI05, family="pi0", tokenizer_max_length=24, seed=6)
#: The test-size pi0.5 with pusht's features (``observation.image`` 3x96x96, a 2-d ``agent_pos``, 2-d actions
#: in pixels): what ``policy-export eval --env pusht`` drives beside LeRobot's eager policy.
PUSHT_PI05 = replace(
    TINY_PI05, cameras={"observation.image": (3, 96, 96)}, state_dim=2, action_dim=2, n_action_steps=5, seed=7
)


def _tokenizer(merges: int) -> Any:
    """A BPE with ``▁`` word boundaries (as Gemma's SentencePiece) and PaliGemma's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=len(BASE_TOKENS) + 1 + 100 + merges,
        special_tokens=[*BASE_TOKENS, IMAGE_TOKEN],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?'-_\n▁"),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=8192,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )


def build_tokenizer_folder(out_dir: str | Path, merges: int = 300) -> Path:
    """The local tokenizer folder the checkpoint's preprocessor names instead of the hub id."""
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        _tokenizer(merges).save_pretrained(tmp)
    return out


def _quantile_stats(rng: np.random.Generator, dim: int) -> dict[str, np.ndarray]:
    stats = _plausible_stats(rng, dim)
    stats["q01"] = (stats["mean"] - 2.3 * stats["std"]).astype(np.float32)
    stats["q99"] = (stats["mean"] + 2.3 * stats["std"]).astype(np.float32)
    return stats


def pi_config(recipe: PiRecipe) -> Any:
    """LeRobot's ``PI05Config`` / ``PI0Config`` for ``recipe`` (float32, CPU)."""
    if recipe.family == "pi05":
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
    elif recipe.family == "pi0":
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
    else:
        raise ValueError(f"family must be pi0 or pi05, got {recipe.family!r}")
    input_features, output_features = _features(recipe)  # type: ignore[arg-type]  # same fields as the ACT recipe's
    return Config(
        input_features=input_features,
        output_features=output_features,
        paligemma_variant=recipe.paligemma_variant,
        action_expert_variant=recipe.action_expert_variant,
        dtype="float32",
        chunk_size=recipe.chunk_size,
        n_action_steps=recipe.n_action_steps,
        num_inference_steps=recipe.num_steps,
        max_state_dim=recipe.max_state_dim,
        max_action_dim=recipe.max_action_dim,
        image_resolution=tuple(recipe.image_resolution),
        tokenizer_max_length=recipe.tokenizer_max_length,
        rtc_config=rtc_config(recipe.rtc),
        device="cpu",
    )


@contextlib.contextmanager
def _local_tokenizer(tokenizer_dir: Path) -> Any:
    """LeRobot's processor factories create ``TokenizerProcessorStep(tokenizer_name=<hub id>)``, which
    loads at once: name the local folder instead, so the saved processor names it too."""
    import lerobot.policies.pi0.processor_pi0 as p0
    import lerobot.policies.pi05.processor_pi05 as p05

    real = p05.TokenizerProcessorStep

    def local(**kwargs: Any) -> Any:
        return real(**{**kwargs, "tokenizer_name": str(tokenizer_dir.resolve())})

    p0.TokenizerProcessorStep = p05.TokenizerProcessorStep = local
    try:
        yield
    finally:
        p0.TokenizerProcessorStep = p05.TokenizerProcessorStep = real


def build_pi_checkpoint(
    out_dir: str | Path, recipe: PiRecipe | None = None, tokenizer_dir: str | Path | None = None
) -> Path:
    """Write a pi0 / pi0.5 ``pretrained_model`` folder (and its tokenizer folder, ``<out_dir>-tokenizer``
    beside it unless ``tokenizer_dir`` already holds one) and return the checkpoint's path."""
    import torch
    from lerobot.policies.factory import get_policy_class

    recipe = recipe or DEFAULT_PI05
    out = Path(out_dir)
    tok_path = Path(tokenizer_dir) if tokenizer_dir is not None else out.with_name(out.name + "-tokenizer")
    if tokenizer_dir is None or not (tok_path / "tokenizer.json").is_file():
        build_tokenizer_folder(tok_path, recipe.tokenizer_merges)
    rng = np.random.default_rng(recipe.seed)
    torch.manual_seed(recipe.seed)
    cfg = pi_config(recipe)
    with gemma_sizes(recipe.sizes), contextlib.redirect_stdout(io.StringIO()):
        policy = get_policy_class(recipe.family)(cfg)
    policy.eval()
    _perturb(policy, rng)
    stats = {
        "observation.state": _quantile_stats(rng, recipe.state_dim),
        "action": _quantile_stats(rng, recipe.action_dim),
    }
    if recipe.family == "pi05":
        from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors as make
    else:
        from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors as make
    with _local_tokenizer(tok_path):
        pre, post = make(cfg, dataset_stats=stats)
    with atomic_directory(out) as tmp:
        policy.save_pretrained(tmp)
        pre.save_pretrained(tmp)
        post.save_pretrained(tmp)
        if recipe.sizes is not None:
            (tmp / SIZES_FILE).write_text(json.dumps(recipe.sizes, indent=2))
    return out


def _perturb(policy: Any, rng: np.random.Generator) -> None:
    """Random init leaves RMSNorm scales at zero (``1 + weight``) and adaRMS modulation weights at
    zero: give them trained-looking values, so an export that dropped one would show in parity."""
    import torch

    with torch.no_grad():
        for module in policy.modules():
            name = type(module).__name__
            if "RMSNorm" not in name and not isinstance(module, torch.nn.LayerNorm):
                continue
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                base = 0.0 if "RMSNorm" in name else 1.0
                weight.copy_(torch.from_numpy((base + rng.uniform(-0.3, 0.3, weight.shape)).astype(np.float32)))
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.copy_(torch.from_numpy(rng.normal(0, 0.05, bias.shape).astype(np.float32)))
            dense = getattr(module, "dense", None)
            if isinstance(dense, torch.nn.Linear):  # adaRMS: scale, shift, gate from the time condition
                dense.weight.copy_(torch.from_numpy(rng.normal(0, 0.05, dense.weight.shape).astype(np.float32)))
