"""config.json against model.safetensors, from the safetensors header alone, before LeRobot builds anything.

LeRobot builds the model from config.json first and loads the weights after, so a size that
disagrees with the weights is only noticed once the model exists: with ``dim_model`` 100000 or
``chunk_size`` 10**9 that takes minutes and many GB (ACT's sinusoidal tables are Python loops
over ``chunk_size x dim_model``), and a diffusion policy's encoder runs a dry pass over an image
of the configured size. The header (a few KB: names, dtypes, shapes; no tensor data) says what
the weights were trained with; every size the config decides is compared with it here, in
milliseconds, and a disagreement is one line naming the field, the weight's shape and the fix.

Sizes no weight records (a diffusion ``horizon``) are bounded instead. Plain Python: no torch.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policy_export.errors import BadInputError

Shapes = dict[str, list[int]]

#: A header larger than this is not a policy's (a huge one is read into memory whole).
MAX_HEADER_BYTES = 100 << 20
#: A diffusion horizon beyond this is refused (LeRobot's configs use 16 to 64; no weight records it).
MAX_HORIZON = 4096

#: torchvision ResNets: blocks per stage and whether the blocks are bottlenecks (have conv3).
RESNETS = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
    "resnet152": ((3, 8, 36, 3), True),
}


def safetensors_shapes(path: Path) -> Shapes:
    """Tensor name -> shape, from the header only (8-byte length, then JSON)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= MAX_HEADER_BYTES:
                raise BadInputError(f"{path}: not a safetensors file (header size {size}); re-copy it")
            header = json.loads(f.read(size))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: corrupted safetensors header ({exc}); re-copy it from the training run") from exc
    if not isinstance(header, dict):
        raise BadInputError(f"{path}: corrupted safetensors header; re-copy it from the training run")
    return {
        k: [int(d) for d in v["shape"]]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("shape"), list)
    }


class _Check:
    """Compares config fields with the weights of one checkpoint; the first disagreement raises."""

    def __init__(self, raw: dict[str, Any], shapes: Shapes, config_path: Path) -> None:
        self.raw, self.shapes, self.path = raw, shapes, config_path

    def refuse(self, field: str, value: object, trained: object, weight: str) -> None:
        shape = self.shapes.get(weight)
        raise BadInputError(
            f"{self.path}: {field} is {value!r}, but model.safetensors was trained with {trained!r} "
            f"({weight} is {shape}); set {field} to {trained!r} or use the config.json saved with these weights"
        )

    def dim(self, field: str, value: object, weight: str, axis: int) -> None:
        """``value`` (the config's) must equal ``weight``'s size along ``axis``."""
        shape = self.shapes.get(weight)
        if shape is None or len(shape) <= axis:
            return  # missing or renamed weights: LeRobot's load names them
        if value != shape[axis]:
            self.refuse(field, value, shape[axis], weight)

    def count(self, prefix: str) -> int:
        """How many numbered children ``prefix<i>.`` the weights hold."""
        pat = re.compile(re.escape(prefix) + r"(\d+)\.")
        return len({m.group(1) for k in self.shapes if (m := pat.match(k))})

    def layers(self, field: str, value: object, prefix: str) -> None:
        trained = self.count(prefix)
        if trained and value != trained:
            weight = next(k for k in sorted(self.shapes) if k.startswith(prefix))
            raise BadInputError(
                f"{self.path}: {field} is {value!r}, but model.safetensors holds {trained} ({prefix}0..{trained - 1}, "
                f"e.g. {weight}); set {field} to {trained} or use the config.json saved with these weights"
            )

    def feature(self, key: str, where: str, weight: str, waxis: int) -> None:
        """A 1-D feature's size (state, action) against the weight that reads or writes it."""
        feats = self.raw.get(where) or {}
        shape = (feats.get(key) or {}).get("shape") if isinstance(feats, dict) else None
        wshape = self.shapes.get(weight)
        if isinstance(shape, list) and len(shape) == 1 and wshape and len(wshape) > waxis and shape[0] != wshape[waxis]:
            raise BadInputError(
                f"{self.path}: feature '{key}' has shape {shape}, but model.safetensors was trained with "
                f"[{wshape[waxis]}] ({weight} is {wshape}); set its shape to [{wshape[waxis]}] in {where} "
                "or use the config.json saved with these weights"
            )

    def backbone(self, stages: list[str]) -> None:
        """``vision_backbone`` against the ResNet the weights hold (blocks per stage, bottlenecks)."""
        name = self.raw.get("vision_backbone", "resnet18")
        if name not in RESNETS:
            return  # LeRobot refuses names it does not know, cheaply
        counts = tuple(self.count(s) for s in stages)
        if not all(counts):
            return
        bottleneck = any(k.startswith(stages[0]) and ".conv3." in k for k in self.shapes)
        if (counts, bottleneck) != RESNETS[name]:
            trained = next((n for n, layout in RESNETS.items() if layout == (counts, bottleneck)), None)
            held = trained or f"a ResNet with {list(counts)} blocks per stage"
            raise BadInputError(
                f"{self.path}: vision_backbone is {name!r}, but model.safetensors holds {held} "
                f"({stages[2]} has {counts[2]} blocks); set vision_backbone to {trained or 'the one trained'!r} "
                "or use the config.json saved with these weights"
            )


def _act(c: _Check) -> None:
    raw = c.raw
    pos = "model.decoder_pos_embed.weight"
    c.dim("dim_model", raw.get("dim_model"), pos, 1)
    c.dim("chunk_size", raw.get("chunk_size"), pos, 0)
    c.dim("dim_feedforward", raw.get("dim_feedforward"), "model.encoder.layers.0.linear1.weight", 0)
    c.dim("latent_dim", raw.get("latent_dim"), "model.encoder_latent_input_proj.weight", 1)
    c.layers("n_encoder_layers", raw.get("n_encoder_layers"), "model.encoder.layers.")
    c.layers("n_decoder_layers", raw.get("n_decoder_layers"), "model.decoder.layers.")
    if raw.get("use_vae", True):
        c.layers("n_vae_encoder_layers", raw.get("n_vae_encoder_layers"), "model.vae_encoder.layers.")
    c.feature("observation.state", "input_features", "model.encoder_robot_state_input_proj.weight", 1)
    c.feature("action", "output_features", "model.action_head.weight", 0)
    c.backbone([f"model.backbone.layer{i}." for i in range(1, 5)])


def _resnet_map(size: int) -> int:
    """Output size of a torchvision ResNet trunk (conv1 7x7/2, maxpool 3x3/2, three 3x3/2 stages)."""
    size = (size + 6 - 7) // 2 + 1
    size = (size + 2 - 3) // 2 + 1
    for _ in range(3):
        size = (size - 1) // 2 + 1
    return size


def _diffusion(c: _Check) -> None:
    raw, shapes = c.raw, c.shapes
    horizon = raw.get("horizon", 64)
    if isinstance(horizon, int) and not 1 <= horizon <= MAX_HORIZON:
        raise BadInputError(
            f"{c.path}: horizon is {horizon}; no weight records it, and policy-export takes at most {MAX_HORIZON} "
            "(LeRobot's configs use 16 to 64): use the config.json saved with these weights"
        )
    unet = "diffusion.unet."
    down = raw.get("down_dims") or []
    c.layers("the number of down_dims", len(down) if isinstance(down, list) else down, unet + "down_modules.")
    for i, width in enumerate(down if isinstance(down, list) else []):
        c.dim(f"down_dims[{i}]", width, f"{unet}down_modules.{i}.0.conv1.block.0.weight", 0)
    c.dim("kernel_size", raw.get("kernel_size"), f"{unet}down_modules.0.0.conv1.block.0.weight", 2)
    dsed = raw.get("diffusion_step_embed_dim")
    c.dim("diffusion_step_embed_dim", dsed, f"{unet}diffusion_step_encoder.1.weight", 1)
    encoders = sorted({m.group(1) for k in shapes if (m := re.match(r"(diffusion\.rgb_encoder\.(?:\d+\.)?)pool\.", k))})
    if not encoders:
        return
    enc = encoders[0]
    c.dim("spatial_softmax_num_keypoints", raw.get("spatial_softmax_num_keypoints"), enc + "pool.nets.weight", 0)
    c.backbone([f"{enc}backbone.{i}." for i in range(4, 8)])
    feats = raw.get("input_features") or {}
    cams = [f for f in feats.values() if isinstance(f, dict) and f.get("type") == "VISUAL"]
    crop = raw.get("crop_shape")
    image = crop if isinstance(crop, list) and len(crop) == 2 else (cams[0].get("shape") or [0, 0, 0])[1:]
    grid = shapes.get(enc + "pool.pos_grid")
    if grid and len(image) == 2 and all(isinstance(d, int) and d > 0 for d in image):
        cells = _resnet_map(image[0]) * _resnet_map(image[1])
        if cells != grid[0]:
            field = "crop_shape" if crop else "the camera features' shape"
            raise BadInputError(
                f"{c.path}: {field} {list(image)} makes a {_resnet_map(image[0])}x{_resnet_map(image[1])} feature map, "
                f"but model.safetensors was trained on {grid[0]} cells ({enc}pool.pos_grid is {grid}); "
                "use the image size and crop_shape of the config.json saved with these weights"
            )
    # The U-Net's conditioning: diffusion_step_embed_dim + n_obs_steps x (state + feature per camera).
    cond = shapes.get(f"{unet}down_modules.0.0.cond_encoder.1.weight")
    out = shapes.get(enc + "out.weight")
    state = (feats.get("observation.state") or {}).get("shape") or [0]
    n_obs = raw.get("n_obs_steps", 2)
    if cond and out and isinstance(dsed, int) and isinstance(state[0], int):
        per_step = state[0] + len(cams) * out[0]
        trained, rest = divmod(cond[1] - dsed, per_step) if per_step > 0 else (0, 1)
        if not rest and trained >= 1 and n_obs != trained:
            c.refuse("n_obs_steps", n_obs, trained, f"{unet}down_modules.0.0.cond_encoder.1.weight")


_CHECKS: dict[str, Callable[[_Check], None]] = {"act": _act, "diffusion": _diffusion}


def check_config_against_weights(raw: dict[str, Any], weights: Path, config_path: Path) -> None:
    """Refuse, in one line, a config.json whose sizes disagree with ``weights`` (header only)."""
    check = _CHECKS.get(str(raw.get("type")))
    if check is not None:
        check(_Check(raw, safetensors_shapes(weights), config_path))
